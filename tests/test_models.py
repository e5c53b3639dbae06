"""The builder: the paper's Table 1 exactly, keras.applications' contract."""

import re

import keras
import numpy as np
import pytest
from conftest import TINY

import keras_vgg

# Paper Table 2 and torchvision's *_bn counts: trainable parameters, 1000 classes.
PARAMS = {
    ("A", False): 132_863_336, ("A-LRN", False): 132_863_336,
    ("B", False): 133_047_848, ("C", False): 133_638_952,
    ("D", False): 138_357_544, ("E", False): 143_667_240,
    ("A", True): 132_868_840, ("B", True): 133_053_736,
    ("D", True): 138_365_992, ("E", True): 143_678_248,
}


def trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("config,batch_norm", list(PARAMS))
def test_parameter_counts(config, batch_norm):
    model = keras_vgg.VGG(config, batch_norm=batch_norm)
    assert trainable(model) == PARAMS[config, batch_norm]
    # BN moving statistics are the only non-trainable weights.
    convs = sum(len(k) for k in keras_vgg.CONFIGS[config].kernels)
    widths = [w for k, w in zip(keras_vgg.CONFIGS[config].kernels,
                                (64, 128, 256, 512, 512)) for _ in k]
    assert model.count_params() - trainable(model) == (2 * sum(widths) if batch_norm else 0)
    assert model.output.shape == (None, 1000)
    assert convs == {"A": 8, "A-LRN": 8, "B": 10, "C": 13, "D": 13, "E": 16}[config]


def test_entry_points_and_aliases():
    for depth, key in [(11, "A"), (13, "B"), (16, "D"), (19, "E")]:
        assert keras_vgg.resolve_config(depth) == key
        assert keras_vgg.resolve_config(str(depth)) == key
        model = getattr(keras_vgg, f"VGG{depth}")(include_top=False, **TINY)
        assert model.name == f"vgg{depth}"
        assert not any("_bn" in layer.name for layer in model.layers)
    assert keras_vgg.resolve_config("a-lrn") == "A-LRN"
    assert keras_vgg.VGG("C", **TINY).name == "vgg16_1x1"
    assert keras_vgg.VGG(16, batch_norm=True, **TINY).name == "vgg16_bn"
    assert keras_vgg.VGG16(name="mine", **TINY).name == "mine"


def test_entry_points_take_batch_norm_as_torchvision_users_type_it():
    """`keras_vgg.VGG16(batch_norm=True)` is torchvision's vgg16_bn: the same
    network as `keras_vgg.VGG(16, batch_norm=True)`, layer for layer."""
    for depth in (11, 13, 16, 19):
        entry = getattr(keras_vgg, f"VGG{depth}")(batch_norm=True, classes=3, **TINY)
        builder = keras_vgg.VGG(depth, batch_norm=True, classes=3, **TINY)
        assert entry.name == f"vgg{depth}_bn"
        assert [(layer.name, [tuple(w.shape) for w in layer.weights])
                for layer in entry.layers[1:]] == \
            [(layer.name, [tuple(w.shape) for w in layer.weights])
             for layer in builder.layers[1:]]   # (input layers are numbered)
        assert any(layer.name == "block1_bn1" for layer in entry.layers)


def test_layer_names_match_keras_applications():
    ours = keras_vgg.VGG16(dropout=0)
    theirs = keras.applications.VGG16(weights=None)
    assert [l.name for l in ours.layers[1:]] == [l.name for l in theirs.layers[1:]]
    ours = keras_vgg.VGG19()
    theirs = keras.applications.VGG19(weights=None)
    weighted = lambda m: [(l.name, [tuple(w.shape) for w in l.weights])
                          for l in m.layers if l.weights]
    assert weighted(ours) == weighted(theirs)
    names = {l.name for l in ours.layers}
    assert {"fc1_dropout", "fc2_dropout"} <= names


def expected_names(config, batch_norm):
    names = []
    for b, kernels in enumerate(keras_vgg.CONFIGS[config].kernels, 1):
        for i, _ in enumerate(kernels, 1):
            names.append(f"block{b}_conv{i}")
            if batch_norm:
                names += [f"block{b}_bn{i}", f"block{b}_relu{i}"]
            if config == "A-LRN" and (b, i) == (1, 1):
                names.append("block1_lrn")
        names.append(f"block{b}_pool")
    return names + ["flatten", "fc1", "fc1_dropout", "fc2", "fc2_dropout", "predictions"]


@pytest.mark.parametrize("config,batch_norm", list(PARAMS))
def test_layer_name_sets(config, batch_norm):
    model = keras_vgg.VGG(config, batch_norm=batch_norm, **TINY)
    assert [l.name for l in model.layers[1:]] == expected_names(config, batch_norm)


def test_config_c_has_1x1_convs_and_lrn_is_after_first_conv():
    model = keras_vgg.VGG("C", **TINY)
    kernels = {l.name: l.kernel_size for l in model.layers if "conv" in l.name}
    assert [n for n, k in kernels.items() if k == (1, 1)] == [
        "block3_conv3", "block4_conv3", "block5_conv3"]
    assert all(k == (3, 3) for n, k in kernels.items() if not n.endswith("conv3")
               or n.startswith(("block1", "block2")))
    lrn = keras_vgg.VGG("A-LRN", **TINY).get_layer("block1_lrn")
    assert isinstance(lrn, keras_vgg.LocalResponseNormalization)
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)


def test_batch_norm_layout_is_torchvisions():
    model = keras_vgg.VGG(11, batch_norm=True, **TINY)
    conv, bn = model.get_layer("block1_conv1"), model.get_layer("block1_bn1")
    assert conv.use_bias and conv.activation is keras.activations.linear
    assert bn.epsilon == 1e-5 and bn.momentum == 0.9


def test_lrn_matches_tensorflow_reference(rng):
    import tensorflow as tf
    x = rng.normal(size=(2, 5, 5, 16)).astype("float32") * 10
    ours = keras_vgg.LocalResponseNormalization()(x)
    # tf.nn.lrn: sqr_sum over [c - r, c + r], b = a / (bias + alpha * sqr_sum) ** beta
    ref = tf.nn.local_response_normalization(x, depth_radius=2, bias=2.0,
                                             alpha=1e-4, beta=0.75)
    np.testing.assert_allclose(np.asarray(ours), ref.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(ours), x / 2.0 ** 0.75)  # the window matters


def test_shapes_any_size_and_pooling():
    model = keras_vgg.VGG16(include_top=False, input_shape=(None, None, 3), **TINY)
    for h, w in [(32, 32), (100, 75), (224, 300)]:
        out = model(np.zeros((1, h, w, 3), "float32"))
        assert out.shape == (1, h // 32, w // 32, 16)
    for pooling in ("avg", "max"):
        m = keras_vgg.VGG19(include_top=False, pooling=pooling, **TINY)
        assert m.output.shape == (None, 16)
    m = keras_vgg.VGG13(classes=7, classifier_activation=None,
                        input_shape=(64, 48, 1), **TINY)
    assert m.output.shape == (None, 7)
    assert m.get_layer("fc1").kernel.shape == (2 * 1 * 16, 32)


def test_input_tensor():
    inputs = keras.Input((64, 64, 3))
    scaled = keras.layers.Rescaling(2.0)(inputs)
    model = keras_vgg.VGG16(include_top=False, input_tensor=scaled, **TINY)
    assert model.inputs[0] is inputs and model.output.shape == (None, 2, 2, 16)


def test_channels_first(channels_first):
    model = keras_vgg.VGG("A-LRN", batch_norm=False, input_shape=(3, 64, 64), **TINY)
    assert model.get_layer("block5_pool").output.shape == (None, 16, 2, 2)
    assert model(np.ones((1, 3, 64, 64), "float32")).shape == (1, 1000)


def test_get_config_round_trip(rng):
    model = keras_vgg.VGG("A-LRN", input_shape=(32, 32, 3), **TINY)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    x = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(clone(x), model(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("config,batch_norm", [("A-LRN", False), ("C", False), ("D", True)])
def test_keras_file_round_trip(tmp_path, rng, config, batch_norm):
    model = keras_vgg.VGG(config, batch_norm=batch_norm, input_shape=(32, 32, 3), **TINY)
    if batch_norm:  # non-trivial moving statistics must survive too
        model.get_layer("block1_bn1").moving_mean.assign(rng.normal(size=4))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    # The same file also serves as `weights=`.
    again = keras_vgg.VGG(config, batch_norm=batch_norm, input_shape=(32, 32, 3),
                          weights=str(path), **TINY)
    np.testing.assert_allclose(again(x), model(x), rtol=1e-6, atol=1e-6)


def test_weights_h5_round_trip(tmp_path, rng):
    model = keras_vgg.VGG13(input_shape=(32, 32, 3), **TINY)
    path = tmp_path / "w.weights.h5"
    model.save_weights(path)
    other = keras_vgg.VGG13(input_shape=(32, 32, 3), weights=path, **TINY)  # a Path
    with pytest.raises(ValueError, match=r"existing weights file"):
        keras_vgg.VGG13(weights=tmp_path / "missing.weights.h5", **TINY)
    x = rng.normal(size=(1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(other(x), model(x), rtol=1e-6)


@pytest.mark.parametrize("kwargs,message", [
    (dict(config="F"), r"config='F'.*Allowed: 'A', 'A-LRN', 'B', 'C', 'D', 'E'"),
    (dict(config=12), r"config=12"),
    (dict(config="D", weights="imagenet2"), r"Received: weights='imagenet2'"),
    (dict(config="D", weights="/no/such/file.h5"), r"existing weights file"),
    (dict(config="A", weights="imagenet"), r"No 'imagenet' weights exist for config='A'.*config='D'"),
    (dict(config="D", batch_norm=True, weights="imagenet"), r"batch_norm=True"),
    (dict(config="D", weights="imagenet", classes=10), r"`classes` should be 1000. Received: classes=10"),
    (dict(config="D", weights="imagenet", classifier_activation="sigmoid"), r"classifier_activation='sigmoid'"),
    (dict(config="D", weights="imagenet", input_shape=(256, 256, 3)), r"must be \(224, 224, 3\)"),
    (dict(config="D", include_top=False, pooling="max2"), r"Received: pooling='max2'"),
    (dict(config="D", input_shape=(None, None, 3)), r"must be static"),
    (dict(config="D", include_top=False, input_shape=(16, 64, 3)), r"at least 32x32"),
    (dict(config="D", input_shape=(224, 224)), r"Received: input_shape=\(224, 224\)"),
    (dict(config="D", classes=0), r"classes=0"),
    (dict(config="D", batch_norm="yes"), r"batch_norm='yes'"),
    (dict(config="D", widths=(8, 8)), r"widths=\(8, 8\)"),
    (dict(config="D", dropout=1.5), r"dropout=1.5"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_vgg.VGG(**kwargs)


def test_unknown_weights_suffix(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"weights.npz.*Allowed suffixes"):
        keras_vgg.VGG16(weights=str(path), **TINY)
