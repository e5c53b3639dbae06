"""Look inside a VGG: Grad-CAM heatmaps, feature maps and filter patterns.

* `grad_cam`: where the network finds the evidence for a class (Selvaraju et
  al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
  Localization", ICCV 2017, https://arxiv.org/abs/1610.02391), computed as
  pytorch-grad-cam computes it (tests/test_explain.py checks the two agree).
* `feature_maps`: the activations of chosen layers, block by block.
* `filter_patterns`: the input that maximises a filter's mean activation, by
  gradient ascent from noise, as in the Keras example "Visualizing what
  convnets learn".

They work on any model of `keras_vgg` (Simonyan & Zisserman,
https://arxiv.org/abs/1409.1556; every configuration, with or without
BatchNorm, `fully_convolutional` ones, the recipes' `.keras` files) and on
VGG backbones under a head of one's own, since they go by layer names.

The code is Keras layers and `keras.ops`, as the models are; only taking a
gradient differs per backend: `_vjp_tensorflow`, `_vjp_jax` and `_vjp_torch`
each import their framework when called.
"""

import collections

import keras
import numpy as np
from keras import ops

from keras_vgg.chain import Chain

_EPSILON = 1e-7  # pytorch-grad-cam's: an all-zero map stays zero


def grad_cam(model, images, class_index=None, layer=None, *, batch_size=32,
             resize=True):
    """Grad-CAM heatmaps: where in each image the evidence for a class lies.

    Reference: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep
    Networks via Gradient-based Localization", ICCV 2017
    (https://arxiv.org/abs/1610.02391).

    As pytorch-grad-cam computes it: the gradient of the class score (the
    logit: with a softmax classifier, the last Dense layer's pre-activation;
    for `keras_vgg.fully_convolutional` models, the class score map averaged
    over space) with respect to the layer's output, averaged over space to
    one weight per channel; the weighted sum of the channels; a ReLU; then
    per image `(cam - min) / (max + 1e-7)` and a bilinear resize to the
    image's height and width. One forward and one backward pass per batch.

    Args:
        model: a `keras_vgg` VGG (any configuration, BatchNorm or not, with
            its top, `fully_convolutional`, or a backbone under a head of
            one's own, built functionally or nested).
        images: `(N, H, W, C)` (or `(N, C, H, W)` for a channels_first model)
            preprocessed as the model expects (`keras_vgg.preprocess_input`),
            of any size the model accepts.
        class_index: the class to explain: `None` (each image's top class),
            an integer, or one integer per image.
        layer: the name of a layer of the conv stack. Defaults to the last
            conv layer of block 5 (its ReLU output, `block5_relu3` in VGG-16
            with BatchNorm), the paper's choice.
        batch_size: images per forward and backward pass.
        resize: `False` returns the maps at the layer's resolution, before
            the resize.

    Returns:
        float32 `(N, H, W)` heatmaps in [0, 1] (`(N, h, w)` of the layer with
        `resize=False`).

    Example:
    ```python
    model = keras_vgg.VGG16(weights="imagenet")
    x = keras_vgg.preprocess_input(images_224)
    heatmaps = keras_vgg.explain.grad_cam(model, x)            # top class
    cat = keras_vgg.explain.grad_cam(model, x, class_index=281)
    ```
    """
    chain = Chain(model)
    x = _check_images(chain, images)
    target = chain.layer(layer or chain.default_layer(), spatial=True)
    source, to_scores = chain.scores()
    if len(chain.output.shape) != 2:
        raise ValueError(
            f"grad_cam explains class scores; model {chain.name!r} outputs "
            f"shape {tuple(chain.output.shape)}. Allowed: a model with a "
            "classifier (include_top=True, fully_convolutional, or a head of "
            "one's own ending in Dense).")
    try:
        head = keras.Model(chain.outputs[target.name], source)
    except ValueError as e:
        raise ValueError(
            f"The class scores of model {chain.name!r} do not depend on layer "
            f"{target.name!r} ({e}). Allowed: a layer of the conv stack, e.g. "
            f"{chain.conv_names()}") from None
    body = keras.Model(chain.input, chain.outputs[target.name])
    classes = int(chain.output.shape[-1])
    wanted = _class_indices(class_index, len(x), classes)
    cams = []
    for start in range(0, len(x), batch_size):
        activations = body(x[start:start + batch_size], training=False)
        scores, pull = _vjp(
            lambda a: ops.cast(to_scores(head(a, training=False)), "float32"),
            activations)
        chosen = np.argmax(ops.convert_to_numpy(scores), axis=-1) \
            if wanted is None else wanted[start:start + batch_size]
        cotangent = np.eye(classes, dtype="float32")[chosen]
        gradients = pull(ops.convert_to_tensor(cotangent))
        cams.append(_cam(_channels_last(activations, chain.axes),
                         _channels_last(gradients, chain.axes)))
    cams = np.concatenate(cams)
    if resize:
        size = [x.shape[i] for i in chain.axes]
        cams = ops.convert_to_numpy(ops.image.resize(
            cams[..., None], size, interpolation="bilinear",
            data_format="channels_last"))[..., 0]
    return cams.astype("float32")


def default_layer(model):
    """The layer `grad_cam` explains by default: the last conv layer of block
    5, after its ReLU (`block5_conv3` in VGG-16, `block5_relu3` in VGG-16
    with BatchNorm).

    Args:
        model: a `keras_vgg` VGG (see `grad_cam`).

    Returns:
        The layer's name.
    """
    return Chain(model).default_layer()


def block_layers(model):
    """The last conv layer of each block, after its ReLU, before the block's
    pooling: the layers `feature_maps` returns by default.

    Args:
        model: a `keras_vgg` VGG (see `grad_cam`).

    Returns:
        Layer names, block 1 first.
    """
    return Chain(model).block_ends()


def _cam(activations, gradients):
    """Grad-CAM from channels_last activations and gradients, as
    pytorch-grad-cam's `GradCAM` and `scale_cam_image` compute it."""
    weights = gradients.mean(axis=(1, 2))                      # (N, C)
    cam = np.maximum((activations * weights[:, None, None, :]).sum(-1), 0)
    cam = cam - cam.min(axis=(1, 2), keepdims=True)
    return cam / (_EPSILON + cam.max(axis=(1, 2), keepdims=True))


def feature_maps(model, images, layers=None, *, batch_size=32):
    """The activations of chosen layers, to see the hierarchy block by block.

    Reference: Simonyan & Zisserman, https://arxiv.org/abs/1409.1556.

    Args:
        model: a `keras_vgg` VGG (see `grad_cam`).
        images: preprocessed images, as for `grad_cam`.
        layers: layer names; defaults to the last conv layer of each block
            (its ReLU output with BatchNorm), before its pooling.
        batch_size: images per forward pass.

    Returns:
        A dict from layer name to its activations (numpy, the model's data
        format), in the order of `layers`.

    Example:
    ```python
    maps = keras_vgg.explain.feature_maps(model, x)
    maps["block1_conv2"].shape   # (N, 224, 224, 64) in VGG-16
    ```
    """
    layers = [layers] if isinstance(layers, str) else layers
    names = list(layers) if layers is not None else block_layers(model)
    chain = _deepest(model, names)
    x = _check_images(chain, images)
    extractor = keras.Model(chain.input, [chain.outputs[n] for n in names])
    outputs = extractor.predict(x, batch_size=batch_size, verbose=0)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return {name: np.asarray(out) for name, out in zip(names, outputs)}


def _deepest(model, names):
    """The model's chain up to the deepest of the named layers, of any image
    size when that is only conv layers."""
    full = Chain(model)
    if not names:
        raise ValueError(f"No layers asked for. Allowed: layer names of "
                         f"model {model.name!r}, e.g. {full.conv_names()}")
    order = [layer.name for layer in full.layers]
    deepest = max(order.index(full.layer(n).name) for n in names)
    return Chain(model, upto=order[deepest], any_size=True)


FilterPatterns = collections.namedtuple(
    "FilterPatterns", ["images", "inputs", "activations"])
FilterPatterns.__doc__ = """What `filter_patterns` found.

Attributes:
    images: float32 `(n, size, size, 3)`, RGB in [0, 1]: the patterns,
        standardised for display.
    inputs: the model inputs the ascent ended on (BGR, mean subtracted,
        the model's data format).
    activations: float32 `(steps + 1, n)`: each filter's mean activation
        at every step, from the starting noise to `inputs`.
"""


def filter_patterns(model, layer, filters, size=64, steps=30,
                    learning_rate=4.0, seed=0):
    """The input patterns that maximise filters' mean activations.

    Gradient ascent from noise, as in the Keras example "Visualizing what
    convnets learn" (after Erhan et al. 2009): each step moves the image
    along the gradient of the filter's mean activation, normalised to a
    root-mean-square of one, times `learning_rate` (in pixel levels of
    0-255). Filters of block 1 come out as edges and colours, those of
    block 4 as textures. All filters ascend together, one image each.

    Reference: Simonyan & Zisserman, https://arxiv.org/abs/1409.1556.

    Args:
        model: a `keras_vgg` VGG (see `grad_cam`).
        layer: the name of a layer of the conv stack.
        filters: a filter (channel) index or a list of them.
        size: side of the square images (any size for conv layers).
        steps: gradient ascent steps.
        learning_rate: step size, in pixel levels per step (RMS).
        seed: seed of the starting noise.

    Returns:
        A `FilterPatterns` (`images`, `inputs`, `activations`).

    Example:
    ```python
    found = keras_vgg.explain.filter_patterns(model, "block4_conv3", range(8))
    found.images.shape                 # (8, 64, 64, 3)
    found.activations[-1] > found.activations[0]
    ```
    """
    chain = _deepest(model, [layer])
    target = chain.layer(layer, spatial=True)
    extractor = keras.Model(chain.input, chain.outputs[target.name])
    channels_last = chain.data_format == "channels_last"
    filters = [filters] if isinstance(filters, (int, np.integer)) else list(filters)
    depth = chain.outputs[target.name].shape[-1 if channels_last else 1]
    bad = [f for f in filters if not 0 <= int(f) < depth]
    if bad or not filters:
        raise ValueError(
            f"Filter index(es) {bad or filters} out of range for layer "
            f"{target.name!r}, which has {depth} filters. Received: "
            f"filters={filters}. Allowed: integers in [0, {depth}).")
    rng = np.random.default_rng(seed)
    shape = (len(filters), size, size, 3) if channels_last else \
        (len(filters), 3, size, size)
    # The Keras example's noise (+-1/8 of the input range) around the
    # mean-subtracted grey that VGG inputs centre on.
    x = rng.uniform(-16, 16, shape).astype("float32")
    select = ops.convert_to_tensor(np.eye(depth, dtype="float32")[filters])

    def mean_activation(inputs):
        maps = extractor(inputs, training=False)
        maps = maps if channels_last else ops.moveaxis(maps, 1, -1)
        picked = ops.sum(ops.cast(maps, "float32") * select[:, None, None, :], -1)
        return ops.mean(picked, axis=(1, 2))

    history = []
    for _ in range(steps):
        value, pull = _vjp(mean_activation, x)
        history.append(ops.convert_to_numpy(value))
        grad = ops.convert_to_numpy(pull(ops.ones_like(value)))
        rms = np.sqrt((grad ** 2).mean(axis=tuple(range(1, 4)), keepdims=True))
        x = x + learning_rate * grad / (rms + 1e-8)
    history.append(ops.convert_to_numpy(mean_activation(x)))
    images = x if channels_last else x.transpose(0, 2, 3, 1)
    return FilterPatterns(_for_display(images[..., ::-1]), x,
                          np.array(history, "float32"))


def _for_display(images):
    """The Keras example's deprocessing: standardise, 0.15 std around grey."""
    mean = images.mean(axis=(1, 2, 3), keepdims=True)
    std = images.std(axis=(1, 2, 3), keepdims=True)
    return np.clip((images - mean) / (std + 1e-5) * 0.15 + 0.5, 0, 1).astype("float32")


# --------------------------------------------------------------------------
# Checks of the arguments


def _check_images(chain, images):
    x = ops.convert_to_numpy(images).astype("float32", copy=False)
    expected = chain.shape[1:]
    channel_axis = 3 if chain.data_format == "channels_last" else 1
    channels = expected[channel_axis - 1]
    layout = "(N, H, W, C)" if channel_axis == 3 else "(N, C, H, W)"
    if x.ndim != 4:
        raise ValueError(
            f"Expected a batch of images {layout}; received an array of shape "
            f"{x.shape}. Allowed: 4-D, with {channels} channels (add a batch "
            "axis for one image: images[None]).")
    if x.shape[channel_axis] != channels:
        raise ValueError(
            f"Model {chain.name!r} takes {channels} channels on axis "
            f"{channel_axis} {layout}; received images of shape {x.shape}.")
    if any(expected[i - 1] not in (None, x.shape[i]) for i in chain.axes):
        raise ValueError(
            f"Model {chain.name!r} takes images of shape {expected}; received "
            f"shape {x.shape[1:]}. Allowed: that size (resize or crop them), or "
            "any size through keras_vgg.fully_convolutional(model).")
    return x


def _channels_last(tensor, axes):
    array = ops.convert_to_numpy(ops.cast(tensor, "float32"))
    return array if axes == (1, 2) else array.transpose(0, 2, 3, 1)


def _class_indices(class_index, n, classes):
    if class_index is None:
        return None
    wanted = np.asarray(class_index)
    if wanted.ndim == 0:
        wanted = np.full(n, wanted)
    if wanted.shape != (n,) or not np.issubdtype(wanted.dtype, np.integer) or \
            ((wanted < 0) | (wanted >= classes)).any():
        raise ValueError(
            f"class_index out of range. Received: class_index={class_index!r} "
            f"for {n} image(s). Allowed: None (the top class), an integer in "
            f"[0, {classes}), or one such integer per image.")
    return wanted


# --------------------------------------------------------------------------
# Gradients: the one step each backend does its own way


def _vjp(fn, x):
    """`fn(x)` and the function pulling a cotangent of it back to `x`."""
    backend = keras.backend.backend()
    vjp = {"tensorflow": _vjp_tensorflow, "jax": _vjp_jax,
           "torch": _vjp_torch}.get(backend)
    if vjp is None:
        raise NotImplementedError(
            f"keras_vgg.explain takes gradients on the tensorflow, jax and "
            f"torch backends; Keras runs on {backend!r} here. Set "
            "KERAS_BACKEND to one of those.")
    return vjp(fn, ops.convert_to_tensor(x))


def _vjp_tensorflow(fn, x):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    return y, lambda cotangent: tape.gradient(y, x, output_gradients=cotangent)


def _vjp_jax(fn, x):
    import jax

    y, pull = jax.vjp(fn, x)
    return y, lambda cotangent: pull(cotangent)[0]


def _vjp_torch(fn, x):
    import torch

    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = fn(x)
    return y, lambda cotangent: torch.autograd.grad(y, x, cotangent)[0]
