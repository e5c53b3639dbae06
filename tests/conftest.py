import os

import keras
import numpy as np
import pytest

# Narrow widths keep unit tests fast; the architecture (depth, kernels, layer
# names, head) is the same as the full-size model's.
TINY = dict(widths=(4, 8, 8, 16, 16), fc_units=32)


@pytest.fixture(autouse=True)
def _fresh_keras():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_image_data_format("channels_last")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.backend.backend()}, " \
           f"KERAS_HOME={os.environ.get('KERAS_HOME', '~/.keras')}"
