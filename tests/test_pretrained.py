"""keras.applications compatibility: its weight files, its outputs, `weights="imagenet"`.

The files keras.applications ships are legacy H5 weights written by layer name.
The tests write such files from `keras.applications.VGG16/VGG19(weights=None)`
themselves (no download), load them into keras_vgg and compare outputs.
"""

import hashlib

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

import keras_vgg
from keras_vgg import weights as weights_lib


def write_legacy_h5(model, path):
    """Writes weights exactly as keras.applications' .h5 files are laid out."""
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return str(path)


def randomize(model, rng):
    # Glorot init gives outputs near uniform; spread them so the comparison bites.
    model.set_weights([rng.normal(scale=0.05, size=w.shape).astype("float32")
                       for w in model.get_weights()])


@pytest.fixture(scope="module")
def image():
    return keras_vgg.preprocess_input(
        np.random.default_rng(1).uniform(0, 255, size=(2, 224, 224, 3)))


@pytest.mark.parametrize("name", ["VGG16", "VGG19"])
def test_keras_applications_weights_give_same_outputs(tmp_path, rng, image, name):
    theirs = getattr(keras.applications, name)(weights=None)
    randomize(theirs, rng)
    path = write_legacy_h5(theirs, tmp_path / f"{name}.h5")
    ours = getattr(keras_vgg, name)(weights=path)
    np.testing.assert_allclose(ours.predict(image, verbose=0),
                               theirs.predict(image, verbose=0), rtol=1e-5, atol=1e-6)

    notop = getattr(keras.applications, name)(weights=None, include_top=False)
    notop.set_weights(theirs.get_weights()[:len(notop.get_weights())])
    path = write_legacy_h5(notop, tmp_path / f"{name}_notop.h5")
    ours = getattr(keras_vgg, name)(weights=path, include_top=False, pooling="avg")
    ref = keras.layers.GlobalAveragePooling2D()(notop(image))
    np.testing.assert_allclose(ours(image), ref, rtol=1e-5, atol=1e-5)

    with pytest.raises(ValueError, match=r"no weights for layers \['fc1', 'fc2', 'predictions'\]"):
        getattr(keras_vgg, name)(weights=path)


def test_imagenet_weights_through_keras_cache(tmp_path, monkeypatch, rng, image):
    """`weights="imagenet"` goes through keras.utils.get_file; with the file in
    the cache it never touches the network and checks the file's hash."""
    # $KERAS_HOME is read once, when keras is imported; point it here instead.
    monkeypatch.setattr("keras.src.backend.config._KERAS_DIR", str(tmp_path))
    theirs = keras.applications.VGG16(weights=None)
    randomize(theirs, rng)
    entry = weights_lib.PRETRAINED["D", False]["imagenet"]
    (tmp_path / "models").mkdir()
    path = write_legacy_h5(theirs, tmp_path / "models" / entry.top.fname)
    md5 = hashlib.md5(open(path, "rb").read()).hexdigest()
    # The real hash is of the real file; point the entry at ours for the test.
    fake = weights_lib.PretrainedWeights(
        top=weights_lib.WeightsFile(entry.top.fname, entry.top.url, md5),
        notop=entry.notop, num_params=entry.num_params)
    monkeypatch.setitem(weights_lib.PRETRAINED, ("D", False), {"imagenet": fake})
    ours = keras_vgg.VGG16(weights="imagenet")
    np.testing.assert_allclose(ours.predict(image, verbose=0),
                               theirs.predict(image, verbose=0), rtol=1e-5, atol=1e-6)
    assert ours.count_params() == entry.num_params


def test_missing_imagenet_file_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("keras.src.backend.config._KERAS_DIR", str(tmp_path))
    entry = weights_lib.PRETRAINED["E", False]["imagenet"]
    unreachable = weights_lib.WeightsFile(entry.notop.fname,
                                          "http://127.0.0.1:9/" + entry.notop.fname,
                                          entry.notop.md5)
    monkeypatch.setitem(weights_lib.PRETRAINED, ("E", False), {"imagenet": (
        weights_lib.PretrainedWeights(top=entry.top, notop=unreachable,
                                      num_params=entry.num_params))})
    with pytest.raises(RuntimeError, match=r"vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
                       r".*Offline, copy the file \(md5 253f8cb515780f3b799900260a226db6\)"):
        keras_vgg.VGG19(weights="imagenet", include_top=False)


def test_pretrained_metadata_is_consistent():
    for (config, batch_norm), entries in weights_lib.PRETRAINED.items():
        for entry in entries.values():
            assert len(entry.top.md5) == 32 and entry.top.url.endswith(entry.top.fname)
            model = keras_vgg.VGG(config, batch_norm=batch_norm)
            assert model.count_params() == entry.num_params
            keras.backend.clear_session()
