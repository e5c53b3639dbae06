"""The model code is backend-agnostic: the same weights give the same outputs
on the JAX and PyTorch backends as on TensorFlow, through the builders,
`fully_convolutional`, `feature_extractor`, every weights loader and
channels_first (which TensorFlow cannot run on CPUs without oneDNN; these
two backends can). Each backend runs in a subprocess, since Keras picks its
backend once per process.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import TINY
from test_pretrained import write_legacy_h5

import keras_vgg

VARIANTS = [("A", False), ("A-LRN", False), ("B", True), ("C", False), ("D", True), ("E", False)]
FEATURES = ["block1_conv1", "block3_conv2", "block5_conv2"]

SCRIPT = r"""
import json, sys
import numpy as np
import keras
import keras_vgg
args = json.loads(sys.argv[1])
assert keras.backend.backend() == args["backend"], keras.backend.backend()
d = args["dir"]
x = np.load(f"{d}/x.npy")
big = np.concatenate([x, x[:, :, :64]], axis=2)  # 224x288: a 1x3 score map
out = {}

def run(data_format, tag):
    keras.config.set_image_data_format(data_format)
    t = (lambda a: a) if data_format == "channels_last" else \
        (lambda a: np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    shape = (224, 224, 3) if data_format == "channels_last" else (3, 224, 224)
    for config, bn in args["variants"]:
        model = keras_vgg.VGG(config, batch_norm=bn, classifier_activation=None,
                              input_shape=shape,
                              weights=f"{d}/{config}_{bn}.weights.h5", **args["tiny"])
        np.save(f"{d}/{tag}_{config}_{bn}.npy", model.predict(t(x), verbose=0))
        dense = keras_vgg.fully_convolutional(model)
        np.save(f"{d}/{tag}_{config}_{bn}_dense.npy",
                keras.ops.convert_to_numpy(dense(t(big))))
    try:
        dense(t(x[:, :200]))
    except ValueError as e:
        out[tag + "_small_error"] = str(e)
    # feature_extractor on a headless model of any size.
    any_size = (None, None, 3) if data_format == "channels_last" else (3, None, None)
    backbone = keras_vgg.VGG("E", include_top=False, input_shape=any_size,
                             weights=f"{d}/E_notop.weights.h5", **args["tiny"])
    feats = keras_vgg.feature_extractor(backbone, args["features"])(t(x[:, :80, :96]))
    for name, f in zip(args["features"], feats):
        f = keras.ops.convert_to_numpy(f)
        np.save(f"{d}/{tag}_feat_{name}.npy",
                f if data_format == "channels_last" else f.transpose(0, 2, 3, 1))
    # keras.applications' legacy .h5 (by name) and a torchvision state dict.
    model = keras_vgg.VGG16(weights=f"{d}/apps.h5", input_shape=shape,
                            classifier_activation=None, **args["tiny"])
    np.save(f"{d}/{tag}_apps.npy", model.predict(t(x), verbose=0))
    model = keras_vgg.VGG(11, classes=10, classifier_activation=None, input_shape=shape,
                          weights=f"{d}/tv.safetensors", **args["tiny"])
    np.save(f"{d}/{tag}_tv.npy", model.predict(t(x), verbose=0))

run("channels_last", "last")
run("channels_first", "first")
print(json.dumps(out))
"""


def spread(model, rng):
    """Weights spread enough that outputs depend strongly on the input."""
    model.set_weights([w + rng.normal(scale=0.05, size=w.shape).astype("float32")
                       for w in model.get_weights()])
    return model


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Weights files and TensorFlow's outputs for them (channels_last)."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file
    from test_torch_weights import TorchVGG

    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    d = tmp_path_factory.mktemp("backends")
    x = rng.normal(scale=30, size=(2, 224, 224, 3)).astype("float32")
    np.save(d / "x.npy", x)
    big = np.concatenate([x, x[:, :, :64]], axis=2)
    expected = {}
    for config, bn in VARIANTS:
        model = spread(keras_vgg.VGG(config, batch_norm=bn, classifier_activation=None,
                                     **TINY), rng)
        model.save_weights(d / f"{config}_{bn}.weights.h5")
        expected[config, bn] = (model.predict(x, verbose=0),
                                np.asarray(keras_vgg.fully_convolutional(model)(big)))
        if (config, bn) == ("E", False):
            notop = keras_vgg.VGG("E", include_top=False, input_shape=(None, None, 3), **TINY)
            for layer in notop.layers:
                if layer.weights:
                    layer.set_weights(model.get_layer(layer.name).get_weights())
            notop.save_weights(d / "E_notop.weights.h5")
            feats = keras_vgg.feature_extractor(notop, FEATURES)(x[:, :80, :96])
            expected["features"] = [np.asarray(f) for f in feats]
    # keras.applications' layout and names at TINY widths: our own VGG16,
    # written as keras.applications writes its files.
    apps = spread(keras_vgg.VGG16(classifier_activation=None, dropout=0, **TINY), rng)
    write_legacy_h5(apps, d / "apps.h5")
    expected["apps"] = apps.predict(x, verbose=0)
    net = TorchVGG(11, False, "torchvision", he_init=False).eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        expected["tv"] = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(d / "tv.safetensors"))
    return d, expected


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_backend_matches_tensorflow(reference, backend):
    pytest.importorskip(backend)
    d, expected = reference
    args = dict(backend=backend, dir=str(d), tiny=TINY, variants=VARIANTS,
                features=FEATURES)
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(args)],
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for tag in ("last", "first"):
        assert "at least 224x224" in out[f"{tag}_small_error"]

        def check(name, want, msg):
            got = np.load(d / f"{tag}_{name}.npy")
            atol = 1e-4 * np.abs(want).max()
            # The two images' outputs differ by far more than the tolerance,
            # so a wrong channel order, flatten or layout would show.
            assert np.abs(want[0] - want[1]).max() > 100 * atol, msg
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol,
                                       err_msg=f"{backend} {tag} {msg}")

        for config, bn in VARIANTS:
            plain, dense = expected[config, bn]
            check(f"{config}_{bn}", plain, f"{config} bn={bn}")
            check(f"{config}_{bn}_dense", dense, f"dense {config} bn={bn}")
        for name, want in zip(FEATURES, expected["features"]):
            check(f"feat_{name}", want, f"feature {name}")
        check("apps", expected["apps"], "legacy .h5")
        check("tv", expected["tv"], "torchvision .safetensors")
