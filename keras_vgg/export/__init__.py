"""Export of trained VGG models for TF Serving (SavedModel) and ONNX.

See `export/export_vgg.py` (command line and `export()`) and the README, section "Export".
"""
