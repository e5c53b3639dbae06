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
    The check runs whenever the spatial size is known at call time (eager
    calls, `predict`, the JAX and PyTorch backends); inside a graph traced with
    unknown sizes it is a no-op, and the serving export adds its own check.

    Args:
        min_size: `(height, width)`, the smallest accepted spatial size.
        data_format: `"channels_last"` or `"channels_first"`.
    """

    def __init__(self, min_size, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.min_size = tuple(int(s) for s in min_size)
        self.data_format = data_format

    def call(self, x):
        spatial = x.shape[1:3] if self.data_format == "channels_last" else x.shape[2:4]
        if all(isinstance(s, int) for s in spatial) and (
                spatial[0] < self.min_size[0] or spatial[1] < self.min_size[1]):
            raise ValueError(
                f"Input images must be at least {self.min_size[0]}x"
                f"{self.min_size[1]} (height x width) for this model. "
                f"Received: {spatial[0]}x{spatial[1]} (input shape {tuple(x.shape)})")
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "min_size": self.min_size,
                "data_format": self.data_format}
