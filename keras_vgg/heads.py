"""Other views of a built VGG: the paper's fully-convolutional head (dense
evaluation, section 3.2) and multi-output feature extractors.

Both work on any model made by `keras_vgg.VGG` (or loaded from its `.keras`
file) and on `keras.applications.VGG16/VGG19`, since they go by layer names.
"""

import keras
from keras import layers

from keras_vgg.layers import MinimumInputSize

_HEAD = ("flatten", "fc1", "fc2", "predictions")


def _chain(model):
    """The model's layers in order, checking it is a plain chain (as VGG is)."""
    chain = [layer for layer in model.layers
             if not isinstance(layer, keras.layers.InputLayer)]
    for previous, layer in zip(chain, chain[1:]):
        if layer.input is not previous.output:
            raise ValueError(
                f"Expected a VGG model whose layers form a single chain; in "
                f"model {model.name!r} layer {layer.name!r} does not take the "
                f"output of {previous.name!r}.")
    return chain


def fully_convolutional(model):
    """The same network with its FC layers turned into convolutions.

    As in the paper's dense evaluation (section 3.2): `fc1`, an FC layer over
    the 7x7x512 feature map, becomes a 7x7 convolution with the same weights;
    `fc2` and `predictions` become 1x1 convolutions. The model's classifier
    activation is applied at every location of the resulting class score map,
    which is then averaged spatially. The result accepts images of any size at
    least as large as the original input (224x224 for the standard models):
    at that size its output equals the original model's; on larger images it
    equals running the original head on every 7x7 window of the feature map
    and averaging. Smaller images raise a `ValueError`.

    Weights are copied: the new model does not share variables with `model`.

    Args:
        model: a VGG with its top (`include_top=True`), built by `keras_vgg`
            or `keras.applications`, with a static input size.

    Returns:
        A `keras.Model` with input shape `(None, None, None, channels)` and
        output shape `(None, classes)`, named `model.name + "_fcn"`.

    Example:
    ```python
    model = keras_vgg.VGG16(weights="imagenet")
    dense = keras_vgg.fully_convolutional(model)
    probs = dense.predict(keras_vgg.preprocess_input(images_384x512))
    ```
    """
    names = {layer.name for layer in model.layers}
    missing = [n for n in _HEAD if n not in names]
    if missing:
        raise ValueError(
            f"fully_convolutional needs a VGG with its classifier "
            f"(include_top=True, layers {list(_HEAD)}); model {model.name!r} "
            f"has no layer(s) {missing}.")
    data_format = keras.config.image_data_format()
    chain = _chain(model)
    cut = [layer.name for layer in chain].index("flatten")
    features, head = chain[:cut], chain[cut + 1:]

    in_shape = tuple(model.input.shape[1:])
    feature_shape = tuple(features[-1].output.shape[1:])
    if data_format == "channels_last":
        min_size, channels = in_shape[:2], in_shape[2]
        window, depth = feature_shape[:2], feature_shape[2]
        inputs = keras.Input((None, None, channels))
    else:
        min_size, channels = in_shape[1:], in_shape[0]
        window, depth = feature_shape[1:], feature_shape[0]
        inputs = keras.Input((channels, None, None))
    if None in min_size:
        raise ValueError(f"Model {model.name!r} has no static input size "
                         f"(input shape {in_shape}); cannot tell the FC window.")

    x = MinimumInputSize(min_size, data_format, name="min_input_size")(inputs)
    for layer in features:
        x = _clone(layer)(x)
    dense = [layer for layer in head if isinstance(layer, layers.Dense)]
    for layer in head:
        if isinstance(layer, layers.Dense):
            first, last = layer is dense[0], layer is dense[-1]
            kernel, bias = layer.get_weights()
            size = tuple(window) if first else (1, 1)
            kernel = _dense_to_conv_kernel(kernel, size, depth if first else None)
            # The classifier activation (softmax) normalises over classes, so it
            # is applied below on a channels_last map, not inside the conv.
            conv = layers.Conv2D(layer.units, size,
                                 activation=None if last else layer.activation,
                                 data_format=data_format, name=layer.name)
            x = conv(x)
            conv.set_weights([kernel, bias])
        elif isinstance(layer, layers.Dropout):
            x = _clone(layer)(x)
        else:
            raise ValueError(f"Unexpected layer {layer.name!r} "
                             f"({type(layer).__name__}) in the classifier of "
                             f"model {model.name!r}; expected Dense and Dropout.")
    if data_format == "channels_first":
        x = layers.Permute((2, 3, 1), name="to_channels_last")(x)
    x = layers.Activation(dense[-1].activation, name="score_map")(x)
    x = layers.GlobalAveragePooling2D(data_format="channels_last", name="score_average")(x)
    return keras.Model(inputs, x, name=f"{model.name}_fcn")


def _dense_to_conv_kernel(kernel, size, depth):
    """Reshapes a Dense kernel `(in, out)` into a Conv2D kernel `(h, w, c, out)`.

    Keras' `Flatten` orders features (h, w, c) in either data format (it moves
    channels last first, to keep weights portable), a conv kernel's layout.
    """
    out = kernel.shape[-1]
    if depth is None:
        return kernel.reshape(1, 1, -1, out)
    return kernel.reshape(size[0], size[1], depth, out)


def _clone(layer):
    """A fresh copy of `layer`, weights included once it is built."""
    clone = layer.__class__.from_config(layer.get_config())
    weights = layer.get_weights()
    if weights:
        clone.build(layer.input.shape)
        clone.set_weights(weights)
    return clone


def feature_extractor(model, layers=None, name=None):
    """A model that returns the outputs of the named layers of a VGG.

    The common use is perceptual and style losses (Gatys et al., Johnson et
    al.), which read the activations after chosen ReLUs. In models without
    BatchNorm the conv layers (`block{b}_conv{i}`) already include their ReLU;
    with BatchNorm read `block{b}_relu{i}`.

    Args:
        model: a `keras_vgg` (or keras.applications) VGG.
        layers: layer names, in the order the outputs should come. Defaults to
            the last activation of each block, before its pooling.
        name: name of the new model; defaults to `model.name + "_features"`.

    Returns:
        A `keras.Model` sharing `model`'s layers and weights, whose outputs
        are a list in the order of `layers`. When only conv-stack layers are
        asked for, it accepts images of any size (at least 32x32).

    Example:
    ```python
    vgg = keras_vgg.VGG19(weights="imagenet", include_top=False)
    extract = keras_vgg.feature_extractor(vgg, ["block1_conv1", "block4_conv2"])
    style, content = extract(keras_vgg.preprocess_input(images))
    ```
    """
    chain = _chain(model)
    if layers is None:
        layers = [before.name for before, layer in zip(chain, chain[1:])
                  if layer.name.endswith("_pool") and layer.name.startswith("block")]
    if isinstance(layers, str):
        layers = [layers]
    available = [layer.name for layer in chain]
    unknown = [n for n in layers if n not in available]
    if unknown or not layers:
        raise ValueError(f"Unknown layer(s) {unknown} for model {model.name!r}. "
                         f"Received: layers={list(layers)}. Available: {available}")
    name = name or f"{model.name}_features"
    depth = max(available.index(n) for n in layers)
    if "flatten" in available[:depth + 1]:
        # The head needs the model's own input size.
        return keras.Model(model.input, [model.get_layer(n).output for n in layers],
                           name=name)
    # Convolutional features only: re-apply the same layers to an input of any
    # spatial size, so perceptual losses work on whole images.
    shape = list(model.input.shape[1:])
    spatial = [0, 1] if keras.config.image_data_format() == "channels_last" else [1, 2]
    for i in spatial:
        shape[i] = None
    inputs = keras.Input(tuple(shape))
    x, outputs = inputs, {}
    for layer in chain[:depth + 1]:
        x = outputs[layer.name] = layer(x)
    return keras.Model(inputs, [outputs[n] for n in layers], name=name)
