"""Layers the VGG family needs beyond Keras' own, written with `keras.ops` only.

Both layers are registered as serializable, so `.keras` files that contain
them load with a plain `keras.saving.load_model` once `keras_vgg` is imported.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vgg")
class LocalResponseNormalization(keras.layers.Layer):
    """Cross-channel local response normalisation (Krizhevsky et al., 2012).

    `y_c = x_c / (k + alpha * sum_{c' in window(c)} x_{c'}^2) ** beta`, the
    window being `size` channels centred on `c`. The defaults are AlexNet's,
    which the VGG paper uses in its configuration A-LRN. This is AlexNet's
    formula: Caffe and `torch.nn.LocalResponseNorm` divide `alpha` by `size`,
    so pass `alpha=alpha_caffe / size` to reproduce those.

    Args:
        size: number of channels in the window (odd).
        alpha: scale of the sum of squares.
        beta: exponent.
        k: additive constant.
        axis: the channel axis (-1 for channels_last, 1 for channels_first).
    """

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=2.0, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise ValueError(
                f"`size` must be a positive odd integer. Received: size={size}"
            )
        self.size, self.alpha, self.beta, self.k, self.axis = (
            size, alpha, beta, k, axis)

    def call(self, x):
        axis = self.axis % len(x.shape)
        channels = x.shape[axis]
        half = self.size // 2
        pad = [[0, 0]] * len(x.shape)
        pad[axis] = [half, half]
        squares = ops.pad(ops.square(x), pad)
        # A sum of `size` shifted slices: exact, cheap for the 64 channels of
        # block 1, and free of backend-specific pooling over channels.
        window = sum(_take(squares, axis, i, channels) for i in range(self.size))
        return x / ops.power(self.k + self.alpha * window, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "size": self.size, "alpha": self.alpha,
                "beta": self.beta, "k": self.k, "axis": self.axis}


def _take(x, axis, start, length):
    """`x[..., start:start + length, ...]` along `axis`, for dynamic shapes."""
    index = [slice(None)] * len(x.shape)
    index[axis] = slice(start, start + length)
    return x[tuple(index)]


@keras.saving.register_keras_serializable(package="keras_vgg")
class MinimumInputSize(keras.layers.Layer):
    """Identity that rejects images smaller than the network can classify.

    A fully-convolutional VGG head needs a feature map at least as large as the
    one its first FC layer was trained on (7x7, i.e. a 224x224 image); smaller
    inputs would otherwise fail deep inside a convolution with a shape error.
    When the size is known at call time (eager calls, the JAX and PyTorch
    backends, which trace with concrete shapes) it raises a `ValueError`;
    inside a TensorFlow graph traced with unknown sizes (`predict` retraces
    so after two image sizes, a SavedModel) the graph checks at run time and
    fails with an `InvalidArgumentError` saying the same.

    Args:
        min_size: `(height, width)`, the smallest accepted spatial size.
        data_format: `"channels_last"` or `"channels_first"`.
    """

    def __init__(self, min_size, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.min_size = tuple(int(s) for s in min_size)
        self.data_format = data_format

    def _message(self):
        return (f"Input images must be at least {self.min_size[0]}x"
                f"{self.min_size[1]} (height x width) for this model.")

    def call(self, x):
        spatial = x.shape[1:3] if self.data_format == "channels_last" else x.shape[2:4]
        if all(isinstance(s, int) for s in spatial):
            if spatial[0] < self.min_size[0] or spatial[1] < self.min_size[1]:
                raise ValueError(
                    f"{self._message()} Received: {spatial[0]}x{spatial[1]} "
                    f"(input shape {tuple(x.shape)})")
            return x
        if keras.backend.backend() == "tensorflow":
            return self._check_tensorflow(x)
        return x

    def _check_tensorflow(self, x):
        """The check as graph ops, for sizes known only when the graph runs."""
        import tensorflow as tf

        shape = tf.shape(x)
        rows, cols = (1, 2) if self.data_format == "channels_last" else (2, 3)
        ok = tf.logical_and(shape[rows] >= self.min_size[0],
                            shape[cols] >= self.min_size[1])
        check = tf.debugging.Assert(ok, [self._message() + " Received height, width:",
                                         shape[rows], shape[cols]])
        with tf.control_dependencies([check]):
            return tf.identity(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "min_size": self.min_size,
                "data_format": self.data_format}


@keras.saving.register_keras_serializable(package="keras_vgg")
class IsotropicRescale(keras.layers.Layer):
    """Rescales images so that their smallest side is `smallest_side`.

    The paper's test-time rescale (section 3.2: the image's smallest side
    becomes Q, the aspect ratio is kept), as a layer, so that one model can
    apply a network at several scales (the transfer descriptors of Appendix
    B). Bilinear interpolation with half-pixel centres, without antialiasing
    (`tf.image.resize(..., antialias=False)`, PyTorch's
    `interpolate(mode="bilinear", align_corners=False)`), written with
    `keras.ops` gathers, so it runs on every backend, on images whose size is
    unknown until run time, and converts to ONNX. The other side is rounded
    as `keras_vgg.recipes.data.rescale` rounds it.

    Args:
        smallest_side: Q, the smallest side after rescaling.
        data_format: `"channels_last"` or `"channels_first"`.
    """

    def __init__(self, smallest_side, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(smallest_side, int) or smallest_side < 1:
            raise ValueError("`smallest_side` must be a positive integer. "
                             f"Received: smallest_side={smallest_side!r}")
        self.smallest_side = smallest_side
        self.data_format = data_format

    def _axes(self):
        return (1, 2) if self.data_format == "channels_last" else (2, 3)

    def call(self, x):
        rows, cols = self._axes()
        shape = ops.shape(x)
        h = ops.cast(shape[rows], "float32")
        w = ops.cast(shape[cols], "float32")
        side = float(self.smallest_side)
        short = ops.minimum(h, w)
        new_h = ops.where(h <= w, side, ops.round(h * side / short))
        new_w = ops.where(h <= w, ops.round(w * side / short), side)
        x = _linear_resize(x, rows, shape[rows], new_h)
        return _linear_resize(x, cols, shape[cols], new_w)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        rows, cols = self._axes()
        h, w = shape[rows], shape[cols]
        if h is None or w is None:
            shape[rows] = shape[cols] = None
        else:
            side, short = self.smallest_side, min(h, w)
            shape[rows] = side if h <= w else round(h * side / short)
            shape[cols] = round(w * side / short) if h <= w else side
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "smallest_side": self.smallest_side,
                "data_format": self.data_format}


def _linear_resize(x, axis, size, new_size):
    """Linear interpolation of `x` along `axis` from `size` to `new_size`
    samples, half-pixel centres (sample i sits at (i + 0.5) * size / new_size
    - 0.5), edges clamped."""
    scale = ops.cast(size, "float32") / new_size
    position = (ops.cast(ops.arange(ops.cast(new_size, "int32")), "float32")
                + 0.5) * scale - 0.5
    position = ops.clip(position, 0.0, ops.cast(size, "float32") - 1.0)
    low = ops.cast(ops.floor(position), "int32")
    high = ops.minimum(low + 1, ops.cast(size, "int32") - 1)
    frac = position - ops.cast(low, "float32")
    weight_shape = [1] * len(x.shape)
    weight_shape[axis] = -1
    frac = ops.cast(ops.reshape(frac, weight_shape), x.dtype)
    a, b = ops.take(x, low, axis=axis), ops.take(x, high, axis=axis)
    return a + (b - a) * frac


@keras.saving.register_keras_serializable(package="keras_vgg")
class HorizontalFlip(keras.layers.Layer):
    """Mirrors images left-right (deterministically, unlike `RandomFlip`):
    the flip the paper averages over at test time.

    Args:
        data_format: `"channels_last"` or `"channels_first"`.
    """

    def __init__(self, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.data_format = data_format

    def call(self, x):
        return ops.flip(x, axis=2 if self.data_format == "channels_last" else 3)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}
