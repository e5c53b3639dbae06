"""ImageNet-1k utilities for the VGG models: input preprocessing and labels.

`preprocess_input` and `decode_predictions` follow the contracts of
`keras.applications.vgg16.preprocess_input` and
`keras.applications.imagenet_utils.decode_predictions`, with two differences
that matter in practice:

* `preprocess_input` never writes into the caller's NumPy array (keras does
  for float arrays), and casts integer backend tensors to float (keras keeps
  their integer dtype, so the mean subtraction wraps around).
* `decode_predictions` reads a class index bundled with this package
  (`keras_vgg/data/imagenet_class_index.json`, byte-identical to the file
  keras downloads) so it works offline.

Only NumPy and `keras.ops` are used, so everything runs on any Keras 3
backend and inside symbolic (functional-model) graphs.
"""

import functools
import importlib.resources
import json
import operator
import pathlib

import keras
import numpy as np
from keras import ops

__all__ = [
    "IMAGENET_MEAN_BGR",
    "NUM_CLASSES",
    "decode_predictions",
    "imagenet_classes",
    "preprocess_input",
]

# Mean pixel of the ILSVRC-2012 training set in BGR order, as used by the
# original Caffe VGG models (and keras.applications' "caffe" mode).
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)

NUM_CLASSES = 1000

_DATA_FORMATS = ("channels_last", "channels_first")
_CLASS_INDEX_FILE = "imagenet_class_index.json"


def _resolve_data_format(data_format):
    if data_format is None:
        return keras.config.image_data_format()
    if data_format not in _DATA_FORMATS:
        raise ValueError(
            "Expected data_format to be one of 'channels_last', "
            f"'channels_first' or None. Received: data_format={data_format!r}"
        )
    return data_format


def _channel_axis(shape, data_format):
    """Returns the channel axis of an image (batch), validating the shape."""
    shape = tuple(shape)
    if len(shape) not in (3, 4):
        raise ValueError(
            "preprocess_input expects a single image (3-D) or a batch of "
            f"images (4-D). Received: x with shape {shape}"
        )
    if data_format == "channels_last":
        axis = len(shape) - 1
    else:
        # A 3-D channels_first input is one image (C, H, W); a 4-D one is a
        # batch (N, C, H, W).
        axis = 0 if len(shape) == 3 else 1
    # Symbolic inputs may have an unknown (None) channel dimension; it can
    # only be checked once known.
    if shape[axis] is not None and shape[axis] != 3:
        raise ValueError(
            f"preprocess_input expects 3 (RGB) channels on axis {axis} for "
            f"data_format={data_format!r}. Received: x with shape {shape}"
        )
    return axis


def _mean_shape(ndim, axis):
    # Broadcastable shape for the 3 mean values along the channel axis.
    shape = [1] * ndim
    shape[axis] = 3
    return tuple(shape)


def preprocess_input(x, data_format=None):
    """Preprocesses RGB images for the VGG models ("caffe" convention).

    Converts RGB to BGR and subtracts `IMAGENET_MEAN_BGR` from each channel,
    without scaling, exactly like `keras.applications.vgg16.preprocess_input`.
    The input is expected to hold pixel values in [0, 255].

    The caller's data is never modified: NumPy inputs produce a new array
    (keras.applications writes into float arrays in place).

    Output dtype: float inputs keep their dtype (float16/32/64), as in keras;
    integer and boolean inputs are converted to `keras.config.floatx()`. For
    integer backend tensors this differs from keras.applications, which keeps
    the integer dtype and so returns wrapped-around values.

    Args:
        x: A NumPy array (or anything `np.asarray` accepts, e.g. nested lists)
            or a backend tensor / symbolic `keras.KerasTensor`, either one
            image (3-D) or a batch (4-D), with 3 channels in RGB order.
        data_format: `"channels_last"` (`(..., H, W, 3)`), `"channels_first"`
            (`(..., 3, H, W)`) or `None` for
            `keras.config.image_data_format()`.

    Returns:
        A NumPy array for NumPy (or array-like) input, otherwise a backend
        tensor (symbolic for symbolic input), with the same shape as `x` and
        channels in BGR order, mean-centred.

    Raises:
        ValueError: If `data_format` is not one of the allowed values, `x` is
            not 3-D or 4-D, or its channel axis is not of size 3.

    Example:

    >>> import numpy as np
    >>> image = np.full((224, 224, 3), 128, dtype="uint8")
    >>> out = preprocess_input(image, data_format="channels_last")
    >>> out.dtype, out.shape
    (dtype('float32'), (224, 224, 3))
    >>> [round(float(v), 3) for v in out[0, 0]]
    [24.061, 11.221, 4.32]
    """
    data_format = _resolve_data_format(data_format)
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)

    if isinstance(x, np.ndarray):
        axis = _channel_axis(x.shape, data_format)
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else keras.config.floatx()
        # Flipping gives a view; the subtraction then allocates the output, so
        # x itself is never written. The mean is cast to the output dtype
        # first so the arithmetic (and rounding) matches keras's in-place
        # `x[..., i] -= mean[i]`, which is done in x's dtype.
        flipped = np.flip(x, axis=axis).astype(dtype, copy=False)
        mean = np.asarray(IMAGENET_MEAN_BGR, dtype=dtype).reshape(
            _mean_shape(x.ndim, axis)
        )
        return flipped - mean

    axis = _channel_axis(x.shape, data_format)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if not keras.backend.is_float_dtype(dtype):
        dtype = keras.config.floatx()
        x = ops.cast(x, dtype)
    mean = ops.convert_to_tensor(
        np.asarray(IMAGENET_MEAN_BGR).reshape(_mean_shape(len(x.shape), axis)),
        dtype=dtype,
    )
    # ops.* build new tensors, so a mutable backend tensor (e.g. torch) is
    # left untouched too.
    return ops.subtract(ops.flip(x, axis=axis), mean)


@functools.lru_cache(maxsize=1)
def _class_index():
    """Loads the bundled class index once; returns a tuple of (id, name)."""
    # importlib.resources finds the file inside an installed wheel (or zip);
    # the module-relative path covers unusual loaders that do not support it.
    try:
        text = (
            importlib.resources.files("keras_vgg")
            .joinpath("data")
            .joinpath(_CLASS_INDEX_FILE)
            .read_text(encoding="utf-8")
        )
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError, TypeError):
        path = pathlib.Path(__file__).resolve().parent / "data" / _CLASS_INDEX_FILE
        text = path.read_text(encoding="utf-8")
    raw = json.loads(text)
    if len(raw) != NUM_CLASSES:
        raise RuntimeError(
            f"{_CLASS_INDEX_FILE} is corrupt: expected {NUM_CLASSES} entries, "
            f"found {len(raw)}."
        )
    # A tuple of tuples, so the cached value cannot be changed by callers.
    return tuple((raw[str(i)][0], raw[str(i)][1]) for i in range(NUM_CLASSES))


def imagenet_classes():
    """Returns the ImageNet-1k classes in model output order.

    Args:
        None.

    Returns:
        A new list of 1000 `(synset_id, class_name)` string pairs; entry `i`
        labels output `i` of an ImageNet classifier, e.g. `("n01440764",
        "tench")` for 0. Class names are not unique ("crane" is 134, the
        bird, and 517, the machine; "maillot" is 638 and 639): use the synset
        id as a key.

    Example:

    >>> classes = imagenet_classes()
    >>> len(classes), classes[0], classes[281]
    (1000, ('n01440764', 'tench'), ('n02123045', 'tabby'))
    """
    return list(_class_index())


def decode_predictions(preds, top=5):
    """Decodes the predictions of an ImageNet classifier.

    Same contract as `keras.applications.imagenet_utils.decode_predictions`,
    with the class index read from this package instead of downloaded.

    Args:
        preds: Scores for a batch, shape `(samples, 1000)`: a NumPy array (or
            array-like) or a backend tensor.
        top: Number of best classes to return per sample, an integer in
            [1, 1000]. Defaults to 5.

    Returns:
        A list with one list per sample of `top` tuples
        `(synset_id, class_name, score)`, sorted by descending score. `score`
        is the NumPy scalar from `preds`, as in keras. Ties are broken by
        class index (lower first) and NaN scores rank last.

    Raises:
        ValueError: If `preds` is not of shape `(samples, 1000)` or `top` is
            not an integer in [1, 1000].

    Example:

    >>> import numpy as np
    >>> preds = np.zeros((1, 1000), dtype="float32")
    >>> preds[0, 281], preds[0, 285] = 0.7, 0.2
    >>> [(name, round(float(p), 2)) for _, name, p in decode_predictions(preds, top=2)[0]]
    [('tabby', 0.7), ('Egyptian_cat', 0.2)]
    """
    top_error = ValueError(
        f"top must be an integer in [1, {NUM_CLASSES}]. Received: top={top!r}"
    )
    # bool is an int subclass, but top=True is almost surely a mistake; floats
    # are refused (operator.index) rather than silently truncated.
    if isinstance(top, bool):
        raise top_error
    try:
        top_int = operator.index(top)
    except TypeError:
        raise top_error from None
    if not 1 <= top_int <= NUM_CLASSES:
        raise top_error

    if isinstance(preds, (list, tuple)):
        preds = np.asarray(preds)
    shape = tuple(preds.shape)
    if len(shape) != 2 or shape[1] != NUM_CLASSES:
        raise ValueError(
            "decode_predictions expects a batch of predictions of shape "
            f"(samples, {NUM_CLASSES}). Received: preds with shape {shape}"
        )
    preds = preds if isinstance(preds, np.ndarray) else ops.convert_to_numpy(preds)

    classes = _class_index()
    results = []
    # Sort keys in float64: negating unsigned or boolean scores would wrap
    # around or fail.
    keys = preds.astype(np.float64, copy=False)
    for pred, key in zip(preds, keys):
        # A stable sort of the negated scores gives a deterministic order for
        # ties (lower index first) and puts NaN (which sorts last) at the end.
        order = np.argsort(-key, kind="stable")[:top_int]
        results.append([classes[i] + (pred[i],) for i in order])
    return results
