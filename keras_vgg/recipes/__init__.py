"""Training and evaluation recipes reproducing Simonyan & Zisserman (2015).

* `recipes/train_imagenet.py`: the paper's training protocol (section 3.1).
* `recipes/evaluate.py`: its testing protocols (sections 3.2 and 4).
* `recipes/explain.py`: Grad-CAM overlays, feature maps and filter patterns
  of a trained model (`keras_vgg.explain`), on evaluation's inputs.

All are scripts (`python recipes/train_imagenet.py --smoke`); the modules
beside them (`config`, `data`, `distribute`, `training`) hold the pieces, so
tests and notebooks can import them as `recipes.data` etc.
"""
