"""A small BN VGG learns a real dataset that an installed package ships:
scikit-learn's 1,797 handwritten digits (UCI), not random noise."""

import keras
import numpy as np
import pytest

import keras_vgg

pytest.importorskip("sklearn.datasets")
from keras_vgg.recipes.sources import digits  # noqa: E402


def digits_as_images():
    # 8x8 grey levels 0-16 -> 32x32 RGB 0-255, the smallest size VGG accepts.
    x, y = digits(upscale=4)
    return keras_vgg.preprocess_input(x.astype("float32")), y


def test_small_batch_norm_vgg_learns_digits():
    x, y = digits_as_images()
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    x_train, y_train, x_val, y_val = x[:1500], y[:1500], x[1500:], y[1500:]
    model = keras_vgg.VGG("A", batch_norm=True, classes=10, input_shape=(32, 32, 3),
                          widths=(8, 16, 32, 32, 32), fc_units=64, dropout=0.2)
    model.compile(optimizer=keras.optimizers.SGD(0.02, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    before = model.evaluate(x_val, y_val, verbose=0)[1]
    history = model.fit(x_train, y_train, batch_size=32, epochs=6, verbose=0,
                        validation_data=(x_val, y_val))
    after = history.history["val_accuracy"][-1]
    assert before < 0.25, before           # chance is 0.1
    assert after > 0.9, history.history     # it really learned
    assert history.history["loss"][-1] < history.history["loss"][0] / 3
    # BN statistics moved away from their initial values while training.
    assert np.abs(model.get_layer("block1_bn1").moving_mean.numpy()).max() > 1e-2
