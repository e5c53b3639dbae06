import os
import pathlib
import sys

# The checkout under test comes first, before any installed copy (a .pth of
# another checkout's editable install, a wheel): tests test this tree.
ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Narrow widths keep unit tests fast; the architecture (depth, kernels, layer
# names, head) is the same as the full-size model's.
TINY = dict(widths=(4, 8, 8, 16, 16), fc_units=32)


@pytest.fixture(autouse=True)
def _fresh_keras():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_image_data_format("channels_last")


def backend_runs_channels_first():
    """Whether this backend can run NCHW convolutions on this machine.

    TensorFlow runs them on CPU only through oneDNN, which it turns on only
    on CPUs with AVX-512-class features; on AVX2-only CPUs (AMD EPYC, say)
    Conv2D refuses NCHW. JAX and PyTorch run them everywhere, and
    tests/test_backends.py checks channels_first there on every machine.
    """
    if keras.backend.backend() != "tensorflow":
        return True
    import tensorflow as tf
    if tf.config.list_physical_devices("GPU"):
        return True
    try:
        tf.nn.conv2d(tf.zeros([1, 1, 2, 2]), tf.zeros([1, 1, 1, 1]), 1, "SAME",
                     data_format="NCHW")
        return True
    except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError):
        return False


@pytest.fixture
def channels_first():
    """Switches Keras to channels_first for one test, where the backend can
    run it (see `backend_runs_channels_first`); `_fresh_keras` switches back."""
    if not backend_runs_channels_first():
        pytest.skip("TensorFlow cannot run NCHW convolutions on this CPU "
                    "(no oneDNN); tests/test_backends.py covers channels_first "
                    "on the JAX and PyTorch backends")
    keras.config.set_image_data_format("channels_first")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.backend.backend()}, " \
           f"KERAS_HOME={os.environ.get('KERAS_HOME', '~/.keras')}"
