"""keras-vgg: the VGG family of Simonyan & Zisserman (arXiv:1409.1556) for Keras 3.

```python
import keras_vgg

model = keras_vgg.VGG16(weights="imagenet")          # keras.applications-compatible
model = keras_vgg.VGG("A-LRN", classes=10)           # any column of the paper's Table 1
dense = keras_vgg.fully_convolutional(model)         # the paper's dense evaluation
```
"""

from keras_vgg import explain
from keras_vgg.heads import feature_extractor, fully_convolutional
from keras_vgg.imagenet import (IMAGENET_MEAN_BGR, decode_predictions,
                                imagenet_classes, preprocess_input)
from keras_vgg.layers import LocalResponseNormalization, MinimumInputSize
from keras_vgg.models import (CONFIGS, VGG, VGG11, VGG13, VGG16, VGG19,
                              VGGConfig, resolve_config)
from keras_vgg.torch_weights import load_torch_weights
from keras_vgg.weights import PRETRAINED, load_weights

__version__ = "0.1.0"
