"""Shared helpers of the tests/test_recipes_*.py files (no tests here)."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import tensorflow as tf

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `recipes` is a folder of the repo, not installed
    sys.path.insert(0, str(ROOT))

from keras_vgg.recipes import sources  # noqa: E402

TINY = dict(widths=(4, 8, 8, 16, 16), fc_units=32)
TINY_FLAGS = ["--widths=4,8,8,16,16", "--fc_units=32", "--image_size=32"]


def encoded(image):
    """A uint8 HxWx3 array as PNG bytes."""
    return tf.io.encode_png(np.asarray(image, np.uint8)).numpy()


def split_of(images, labels, name="val"):
    """A `recipes.data.Split` of in-memory images."""
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant([encoded(im) for im in images]),
         tf.constant(labels, tf.int64)))
    return sources.Split(name, ds, len(images))


def random_images(rng, sizes):
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def run_recipe(script, *args, env=None, timeout=300, **kwargs):
    """Runs `recipes/<script>` in a subprocess; returns CompletedProcess."""
    return subprocess.run([sys.executable, str(ROOT / "recipes" / script), *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=recipe_env(env), **kwargs)


def recipe_env(extra=None):
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"},
               **(extra or {}))
    return env
