"""Dense evaluation (fully-convolutional head) and feature extraction."""

import keras
import numpy as np
import pytest
from conftest import TINY

import keras_vgg


def spread(model, rng):
    model.set_weights([rng.normal(scale=0.3, size=w.shape).astype("float32")
                       if w.ndim > 1 else rng.normal(scale=0.1, size=w.shape).astype("float32")
                       for w in model.get_weights()])


def softmax(z):
    z = z - z.max(-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


def dense_reference(model, x):
    """The Dense head on every 7x7 window of the feature map, softmax, averaged."""
    features = keras.Model(model.input, model.get_layer("block5_pool").output)
    big = keras_vgg.VGG(16, include_top=False, input_shape=x.shape[1:],
                        widths=TINY["widths"])
    big.set_weights(features.get_weights())
    fmap = np.asarray(big(x))
    (w1, b1), (w2, b2), (w3, b3) = (model.get_layer(n).get_weights()
                                    for n in ("fc1", "fc2", "predictions"))
    n, h, w, _ = fmap.shape
    scores = []
    for i in range(h - 6):
        for j in range(w - 6):
            v = fmap[:, i:i + 7, j:j + 7, :].reshape(n, -1)
            v = np.maximum(v @ w1 + b1, 0)
            v = np.maximum(v @ w2 + b2, 0)
            scores.append(softmax(v @ w3 + b3))
    return np.mean(scores, axis=0), h - 6, w - 6


def test_dense_equals_original_at_224_full_size(rng):
    model = keras_vgg.VGG16()
    dense = keras_vgg.fully_convolutional(model)
    assert dense.input.shape == (None, None, None, 3)
    assert dense.get_layer("fc1").kernel.shape == (7, 7, 512, 4096)
    x = rng.normal(scale=50, size=(2, 224, 224, 3)).astype("float32")
    np.testing.assert_allclose(dense.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-6)


def test_dense_on_larger_non_square_input_equals_window_average(rng):
    model = keras_vgg.VGG16(**TINY)
    spread(model, rng)
    dense = keras_vgg.fully_convolutional(model)
    x = rng.normal(size=(2, 320, 256, 3)).astype("float32")
    ref, rows, cols = dense_reference(model, x)
    assert (rows, cols) == (4, 2)  # a real score map, not one location
    out = dense.predict(x, verbose=0)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-6)
    # and the map is not constant: averaging really mixes different windows
    assert np.abs(out - keras_vgg.fully_convolutional(model)(x[:, :224, :224])).max() > 1e-3


@pytest.mark.parametrize("config,batch_norm", [("A-LRN", False), ("C", False), ("E", True)])
def test_dense_other_configs_and_round_trip(tmp_path, rng, config, batch_norm):
    model = keras_vgg.VGG(config, batch_norm=batch_norm, classifier_activation=None, **TINY)
    spread(model, rng)
    dense = keras_vgg.fully_convolutional(model)
    x = rng.normal(size=(1, 224, 224, 3)).astype("float32")
    np.testing.assert_allclose(dense(x), model(x), rtol=1e-4, atol=1e-4)
    path = tmp_path / "dense.keras"
    dense.save(path)
    loaded = keras.saving.load_model(path)
    y = rng.normal(size=(1, 256, 288, 3)).astype("float32")
    np.testing.assert_allclose(loaded(y), dense(y), rtol=1e-5, atol=1e-5)


def test_dense_weights_are_copies():
    model = keras_vgg.VGG11(**TINY)
    dense = keras_vgg.fully_convolutional(model)
    before = dense.get_layer("block1_conv1").kernel.numpy().copy()
    model.get_layer("block1_conv1").kernel.assign(np.zeros_like(before))
    np.testing.assert_array_equal(dense.get_layer("block1_conv1").kernel.numpy(), before)


def test_dense_channels_first(rng, channels_first):
    model = keras_vgg.VGG13(input_shape=(3, 64, 96), **TINY)
    spread(model, rng)
    dense = keras_vgg.fully_convolutional(model)
    x = rng.normal(size=(2, 3, 64, 96)).astype("float32")
    np.testing.assert_allclose(dense(x), model(x), rtol=1e-4, atol=1e-6)


def test_dense_rejects_small_inputs_and_headless_models():
    dense = keras_vgg.fully_convolutional(keras_vgg.VGG16(**TINY))
    with pytest.raises(ValueError, match=r"at least 224x224.*Received: 200x300"):
        dense(np.zeros((1, 200, 300, 3), "float32"))
    with pytest.raises(ValueError, match=r"include_top=True.*\['flatten', 'fc1', 'fc2', 'predictions'\]"):
        keras_vgg.fully_convolutional(keras_vgg.VGG16(include_top=False, **TINY))


def test_the_size_check_holds_in_graphs_traced_with_unknown_sizes(rng):
    """After `predict` on two sizes Keras retraces with unknown sizes; a
    160x160 image must still get the size error, not a failure in fc1."""
    import tensorflow as tf

    dense = keras_vgg.fully_convolutional(keras_vgg.VGG16(**TINY))
    for size in ((224, 224), (256, 288), (240, 320)):
        dense.predict(rng.normal(size=(1, *size, 3)).astype("float32"), verbose=0)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"at least 224x224.*Received height, width:.*160.*160"):
        dense.predict(np.zeros((1, 160, 160, 3), "float32"), verbose=0)
    traced = tf.function(dense, input_signature=[tf.TensorSpec([None, None, None, 3])])
    assert traced(np.zeros((1, 224, 230, 3), "float32")).shape == (1, 1000)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 224x224"):
        traced(np.zeros((2, 224, 100, 3), "float32"))


def test_dense_accepts_keras_applications_model(rng):
    theirs = keras.applications.VGG16(weights=None)
    dense = keras_vgg.fully_convolutional(theirs)
    x = rng.normal(scale=50, size=(1, 224, 224, 3)).astype("float32")
    np.testing.assert_allclose(dense(x), theirs(x), rtol=1e-4, atol=1e-6)


def test_feature_extractor(rng):
    model = keras_vgg.VGG19(include_top=False, **TINY)
    extract = keras_vgg.feature_extractor(model, ["block1_conv1", "block4_conv2"])
    x = rng.normal(size=(1, 64, 64, 3)).astype("float32")
    a, b = extract(x)
    assert a.shape == (1, 64, 64, 4) and b.shape == (1, 8, 8, 16)
    first = model.get_layer("block1_conv1")
    np.testing.assert_allclose(a, first(x), rtol=1e-6)
    default = keras_vgg.feature_extractor(model)
    assert [t.shape[1] for t in default(x)] == [64, 32, 16, 8, 4]
    bn = keras_vgg.VGG(11, batch_norm=True, include_top=False, **TINY)
    explicit = [f"block{b}_relu{i}" for b, i in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2)]]
    x = rng.normal(size=(1, 64, 64, 3)).astype("float32")
    for d, e in zip(keras_vgg.feature_extractor(bn)(x),
                    keras_vgg.feature_extractor(bn, explicit)(x)):
        np.testing.assert_array_equal(d, e)
    # Conv features work at any size, even from a fixed-size classifier...
    full = keras_vgg.VGG16(**TINY)
    f = keras_vgg.feature_extractor(full, ["block2_pool", "block3_conv1"])
    assert [t.shape for t in f(np.zeros((1, 96, 160, 3), "float32"))] == [
        (1, 24, 40, 8), (1, 24, 40, 8)]
    # ...and the head is available at the model's own size.
    f = keras_vgg.feature_extractor(full, ["fc2", "block5_pool"])
    assert [t.shape for t in f(np.zeros((1, 224, 224, 3), "float32"))] == [
        (1, 32), (1, 7, 7, 16)]
    with pytest.raises(ValueError, match=r"Unknown layer\(s\) \['conv9'\]"):
        keras_vgg.feature_extractor(model, ["conv9"])
