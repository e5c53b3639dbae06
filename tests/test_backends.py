"""The model code is backend-agnostic: the same weights give the same outputs
on the PyTorch backend as on TensorFlow (run in a subprocess, since Keras picks
its backend once per process)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY

import keras_vgg

pytest.importorskip("torch")

VARIANTS = [("A", False), ("A-LRN", False), ("B", True), ("C", False), ("D", True), ("E", False)]

SCRIPT = r"""
import json, sys
import numpy as np
import keras
import keras_vgg
assert keras.backend.backend() == "torch", keras.backend.backend()
args = json.loads(sys.argv[1])
out = {}
x = np.load(args["x"])
for config, bn in args["variants"]:
    model = keras_vgg.VGG(config, batch_norm=bn, classifier_activation=None,
                          weights=f"{args['dir']}/{config}_{bn}.weights.h5", **args["tiny"])
    dense = keras_vgg.fully_convolutional(model)
    big = np.concatenate([x, x[:, :, :64]], axis=2)  # 224x288
    np.save(f"{args['dir']}/{config}_{bn}_torch.npy", model.predict(x, verbose=0))
    np.save(f"{args['dir']}/{config}_{bn}_torch_dense.npy",
            keras.ops.convert_to_numpy(dense(big)))
try:
    dense(x[:, :200])
except ValueError as e:
    out["small_error"] = str(e)
print(json.dumps(out))
"""


def test_torch_backend_matches_tensorflow(tmp_path, rng):
    x = rng.normal(scale=30, size=(2, 224, 224, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    expected = {}
    for config, bn in VARIANTS:
        model = keras_vgg.VGG(config, batch_norm=bn, classifier_activation=None, **TINY)
        model.set_weights([w + rng.normal(scale=0.05, size=w.shape).astype("float32")
                           for w in model.get_weights()])
        model.save_weights(tmp_path / f"{config}_{bn}.weights.h5")
        big = np.concatenate([x, x[:, :, :64]], axis=2)
        expected[config, bn] = (model.predict(x, verbose=0),
                                np.asarray(keras_vgg.fully_convolutional(model)(big)))
    args = dict(x=str(tmp_path / "x.npy"), dir=str(tmp_path), tiny=TINY,
                variants=VARIANTS)
    env = dict(os.environ, KERAS_BACKEND="torch")
    result = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(args)],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert "at least 224x224" in out["small_error"]
    for config, bn in VARIANTS:
        plain, dense = expected[config, bn]
        np.testing.assert_allclose(np.load(tmp_path / f"{config}_{bn}_torch.npy"), plain,
                                   rtol=1e-4, atol=1e-4, err_msg=f"{config} bn={bn}")
        np.testing.assert_allclose(np.load(tmp_path / f"{config}_{bn}_torch_dense.npy"),
                                   dense, rtol=1e-4, atol=1e-4, err_msg=f"{config} bn={bn}")
