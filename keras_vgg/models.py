"""The VGG family of Simonyan & Zisserman, "Very Deep Convolutional Networks for
Large-Scale Image Recognition", ICLR 2015 (https://arxiv.org/abs/1409.1556).

One table (`CONFIGS`, the paper's Table 1) and one builder (`VGG`); `VGG11` ...
`VGG19` are thin entry points with the signature of `keras.applications.VGG16`.
"""

import dataclasses
import os

import keras
from keras import layers

from keras_vgg import weights as weights_lib
from keras_vgg.layers import LocalResponseNormalization

WIDTHS = (64, 128, 256, 512, 512)
FC_UNITS = 4096
MIN_SIZE = 32  # five 2x2 poolings need at least 32 pixels to leave one


@dataclasses.dataclass(frozen=True)
class VGGConfig:
    """One column of the paper's Table 1.

    Attributes:
        name: default model name.
        kernels: per block, the kernel size of each conv layer.
        lrn: whether a LocalResponseNormalization follows the first conv.
    """

    name: str
    kernels: tuple
    lrn: bool = False


_3, _33, _333, _3333 = (3,), (3, 3), (3, 3, 3), (3, 3, 3, 3)

# The paper's Table 1. Adding a configuration is one line.
CONFIGS = {
    "A": VGGConfig("vgg11", (_3, _3, _33, _33, _33)),
    "A-LRN": VGGConfig("vgg11_lrn", (_3, _3, _33, _33, _33), lrn=True),
    "B": VGGConfig("vgg13", (_33, _33, _33, _33, _33)),
    "C": VGGConfig("vgg16_1x1", (_33, _33, (3, 3, 1), (3, 3, 1), (3, 3, 1))),
    "D": VGGConfig("vgg16", (_33, _33, _333, _333, _333)),
    "E": VGGConfig("vgg19", (_33, _33, _3333, _3333, _3333)),
}
DEPTHS = {11: "A", 13: "B", 16: "D", 19: "E"}


def resolve_config(config):
    """Maps `"A"`...`"E"`, `"A-LRN"`, or a depth 11/13/16/19 to a table key."""
    key = config
    if isinstance(config, str):
        key = config.strip().upper().replace("_", "-")
        if key.isdigit():
            key = int(key)
    if isinstance(key, int) and not isinstance(key, bool):
        key = DEPTHS.get(key, key)
    if key not in CONFIGS:
        raise ValueError(
            f"Unknown VGG configuration. Received: config={config!r}. Allowed: "
            f"{', '.join(repr(c) for c in CONFIGS)} (the paper's Table 1) or a "
            f"depth {', '.join(str(d) for d in DEPTHS)}.")
    return key


def VGG(config, batch_norm=False, include_top=True, weights=None,
        input_tensor=None, input_shape=None, pooling=None, classes=1000,
        classifier_activation="softmax", name=None, *, dropout=0.5,
        widths=WIDTHS, fc_units=FC_UNITS):
    """Builds a VGG network of the paper's Table 1.

    Reference: Simonyan & Zisserman, "Very Deep Convolutional Networks for
    Large-Scale Image Recognition", ICLR 2015 (https://arxiv.org/abs/1409.1556).

    Layer names are those of `keras.applications.VGG16` (`block{b}_conv{i}`,
    `block{b}_pool`, `flatten`, `fc1`, `fc2`, `predictions`), so its weight
    files load by name. With `batch_norm=True` each conv (bias kept) is followed
    by `block{b}_bn{i}` and `block{b}_relu{i}`, torchvision's `vgg*_bn` layout,
    with its BatchNorm epsilon 1e-5 and momentum 0.1 (Keras' 0.9). Config
    A-LRN has `block1_lrn` after the first conv; C has 1x1 third convs in
    blocks 3-5. The head has the paper's dropout after `fc1` and `fc2`
    (`fc1_dropout`, `fc2_dropout`); keras.applications omits it, which changes
    nothing at inference.

    Inputs are images preprocessed by `keras_vgg.preprocess_input`.

    Args:
        config: `"A"`, `"A-LRN"`, `"B"`, `"C"`, `"D"`, `"E"`, or a depth
            `11`, `13`, `16`, `19` (for A, B, D, E).
        batch_norm: add BatchNorm between each conv and its ReLU.
        include_top: whether to include the three fully-connected layers.
        weights: `None` (random init), `"imagenet"` (D and E without BN: the
            files keras.applications uses, fetched with `keras.utils.get_file`,
            so a cached copy works offline), or the path to a weights file:
            legacy `.h5` (by layer name), `.weights.h5`, `.keras`, or a
            torchvision/timm state dict (`.safetensors`, `.pth`).
        input_tensor: optional Keras tensor to use as the model's input.
        input_shape: optional shape tuple, e.g. `(224, 224, 3)`; spatial sizes
            of at least 32. With `include_top=True` it must be static; without
            it `(None, None, 3)` accepts any size of at least 32.
        pooling: with `include_top=False`: `None` (4D feature map), `"avg"` or
            `"max"` (global pooling to a 2D tensor).
        classes: number of classes, with `include_top=True`.
        classifier_activation: activation of the `predictions` layer; `None`
            returns logits. With pretrained weights only `None` or `"softmax"`.
        name: model name; defaults to e.g. `"vgg16"`, `"vgg16_bn"`.
        dropout: dropout rate after `fc1` and `fc2` (0 for none).
        widths: filters of the five blocks; narrower widths make small models
            for tests and experiments (pretrained weights need the default).
        fc_units: width of `fc1` and `fc2`.

    Returns:
        A `keras.Model`.

    Example:
    ```python
    import keras_vgg

    model = keras_vgg.VGG("C", batch_norm=True, classes=10, input_shape=(64, 64, 3))
    backbone = keras_vgg.VGG16(include_top=False, input_shape=(None, None, 3))
    ```
    """
    key = resolve_config(config)
    cfg = CONFIGS[key]
    _validate(key, batch_norm, include_top, weights, pooling, classes,
              classifier_activation, widths, fc_units, dropout)
    data_format = keras.config.image_data_format()
    channel_axis = -1 if data_format == "channels_last" else 1
    shape = _input_shape(input_shape, input_tensor, include_top, weights,
                         data_format)

    if input_tensor is None:
        img_input = layers.Input(shape=shape)
    elif not keras.backend.is_keras_tensor(input_tensor):
        img_input = layers.Input(tensor=input_tensor, shape=shape)
    else:
        img_input = input_tensor

    x = img_input
    for b, (kernels, filters) in enumerate(zip(cfg.kernels, widths), start=1):
        for i, k in enumerate(kernels, start=1):
            conv = f"block{b}_conv{i}"
            if batch_norm:
                x = layers.Conv2D(filters, k, padding="same", name=conv)(x)
                x = layers.BatchNormalization(axis=channel_axis, momentum=0.9,
                                              epsilon=1e-5, name=f"block{b}_bn{i}")(x)
                x = layers.ReLU(name=f"block{b}_relu{i}")(x)
            else:
                x = layers.Conv2D(filters, k, padding="same", activation="relu",
                                  name=conv)(x)
            if cfg.lrn and b == 1 and i == 1:
                x = LocalResponseNormalization(axis=channel_axis,
                                               name="block1_lrn")(x)
        x = layers.MaxPooling2D(2, strides=2, name=f"block{b}_pool")(x)

    if include_top:
        x = layers.Flatten(name="flatten")(x)
        for fc in ("fc1", "fc2"):
            x = layers.Dense(fc_units, activation="relu", name=fc)(x)
            if dropout:
                x = layers.Dropout(dropout, name=f"{fc}_dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation,
                         name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(data_format=data_format, name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(data_format=data_format, name="max_pool")(x)

    inputs = (keras.utils.get_source_inputs(input_tensor)
              if input_tensor is not None else img_input)
    model = keras.Model(inputs, x,
                        name=name or cfg.name + ("_bn" if batch_norm else ""))

    if weights in weights_lib.PRETRAINED.get((key, batch_norm), {}):
        weights_lib.load_weights(model, weights_lib.pretrained_file(
            key, batch_norm, weights, include_top))
    elif weights is not None:
        weights_lib.load_weights(model, weights)
    return model


def _validate(key, batch_norm, include_top, weights, pooling, classes,
              classifier_activation, widths, fc_units, dropout):
    pretrained = weights_lib.PRETRAINED.get((key, bool(batch_norm)), {})
    if weights is not None and not (
            weights in pretrained
            or (isinstance(weights, (str, os.PathLike)) and os.path.exists(weights))):
        available = sorted({w for v in weights_lib.PRETRAINED.values() for w in v})
        if isinstance(weights, str) and weights in available:
            offered = [f"config={k!r}, batch_norm={bn}"
                       for (k, bn), v in weights_lib.PRETRAINED.items() if weights in v]
            raise ValueError(
                f"No {weights!r} weights exist for config={key!r}, "
                f"batch_norm={bool(batch_norm)}; they exist for "
                f"{'; '.join(offered)}. Use weights=None to train from scratch "
                "or weights=<path> to load a file (torchvision/timm state dicts "
                "included).")
        raise ValueError(
            "The `weights` argument should be either `None` (random "
            f"initialization), one of {available}, or the path to an existing "
            f"weights file. Received: weights={weights!r}")
    if weights in pretrained:
        if include_top and classes != 1000:
            raise ValueError(
                f"If using `weights={weights!r}` with `include_top=True`, "
                f"`classes` should be 1000. Received: classes={classes}")
        if include_top and classifier_activation not in ("softmax", None):
            raise ValueError(
                "Only `None` and `'softmax'` are allowed for "
                f"`classifier_activation` with `weights={weights!r}`. "
                f"Received: classifier_activation={classifier_activation!r}")
        if tuple(widths) != WIDTHS or fc_units != FC_UNITS:
            raise ValueError(
                f"`weights={weights!r}` needs the paper's widths {WIDTHS} and "
                f"fc_units={FC_UNITS}. Received: widths={tuple(widths)}, "
                f"fc_units={fc_units}")
    if not isinstance(batch_norm, bool):
        raise ValueError(f"`batch_norm` must be True or False. Received: "
                         f"batch_norm={batch_norm!r}")
    if pooling not in (None, "avg", "max"):
        raise ValueError("`pooling` must be one of None, 'avg', 'max'. "
                         f"Received: pooling={pooling!r}")
    if include_top and (not isinstance(classes, int) or classes < 1):
        raise ValueError("`classes` must be a positive integer. "
                         f"Received: classes={classes!r}")
    if len(widths) != 5 or not all(isinstance(w, int) and w > 0 for w in widths):
        raise ValueError("`widths` must be five positive integers, one per "
                         f"block. Received: widths={widths!r}")
    if not isinstance(fc_units, int) or fc_units < 1:
        raise ValueError("`fc_units` must be a positive integer. "
                         f"Received: fc_units={fc_units!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout!r}")


def _input_shape(input_shape, input_tensor, include_top, weights, data_format):
    """keras.applications' input-shape rules, with errors that say why."""
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    default = (224, 224, 3) if data_format == "channels_last" else (3, 224, 224)
    if input_shape is None:
        return default if include_top else (
            (None, None, 3) if data_format == "channels_last" else (3, None, None))
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError("`input_shape` must be (height, width, channels) (or "
                         "(channels, height, width) with channels_first). "
                         f"Received: input_shape={input_shape}")
    if data_format == "channels_last":
        spatial, channels = input_shape[:2], input_shape[2]
    else:
        spatial, channels = input_shape[1:], input_shape[0]
    if weights == "imagenet" and channels != 3:
        raise ValueError("Pretrained weights expect 3 input channels. "
                         f"Received: input_shape={input_shape}")
    if weights == "imagenet" and include_top and input_shape != default:
        raise ValueError(
            f"With `weights='imagenet'` and `include_top=True`, `input_shape` "
            f"must be {default}. Received: input_shape={input_shape}. Use "
            "keras_vgg.fully_convolutional(model) for larger images.")
    if include_top and None in spatial:
        raise ValueError(
            "With `include_top=True` the input size must be static, since the "
            f"first FC layer's size depends on it. Received: input_shape="
            f"{input_shape}. Use include_top=False, or "
            "keras_vgg.fully_convolutional(model), for any input size.")
    if any(s is not None and s < MIN_SIZE for s in spatial):
        raise ValueError(f"Input size must be at least {MIN_SIZE}x{MIN_SIZE}. "
                         f"Received: input_shape={input_shape}")
    return input_shape


def _entry_point(depth):
    def builder(include_top=True, weights=None, input_tensor=None,
                input_shape=None, pooling=None, classes=1000,
                classifier_activation="softmax", name=None, *, batch_norm=False,
                **kwargs):
        return VGG(depth, batch_norm, include_top=include_top, weights=weights,
                   input_tensor=input_tensor, input_shape=input_shape,
                   pooling=pooling, classes=classes,
                   classifier_activation=classifier_activation, name=name,
                   **kwargs)

    builder.__name__ = builder.__qualname__ = f"VGG{depth}"
    builder.__doc__ = (
        f"VGG-{depth}, configuration {DEPTHS[depth]} of the paper; "
        f"`keras_vgg.VGG({depth}, batch_norm=False, ...)`.\n\n"
        "Same arguments as `keras.applications.VGG16`, plus `batch_norm=True` "
        f"for torchvision's `vgg{depth}_bn`; see `keras_vgg.VGG` for their "
        "meaning and the keyword-only extras.")
    return builder


VGG11, VGG13, VGG16, VGG19 = (_entry_point(d) for d in (11, 13, 16, 19))
