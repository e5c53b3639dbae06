"""Benchmarks of keras-vgg against keras.applications and PyTorch (issue 5).

`python benchmarks/run.py [--quick | --tiny] [--gpu]`; see the README, section "Performance".
"""
