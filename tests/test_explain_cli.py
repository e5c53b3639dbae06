"""recipes/explain.py (`keras-vgg-explain`) on a model of the smoke run's size:
a readable PNG per image with the overlay and the top classes, under the
test-time preprocessing of evaluation; feature and filter grids; clear
errors. Each mode runs in this process (fast), and the whole command line in
subprocesses, side by side (slow: a TensorFlow start-up each)."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from test_backends import spread
from test_recipes_helpers import ROOT, encoded, recipe_env

import keras_vgg
from keras_vgg.recipes import data as data_lib
from keras_vgg.recipes import sources
from keras_vgg.recipes import explain as command

MEAN = (70.0, 75.0, 80.0)
NAMES = [f"digit {i}" for i in range(10)]
SMOKE = dict(widths=(8, 16, 32, 32, 32), fc_units=64)   # recipes/config.py's SMOKE
Q = 36

# name: (flags, exit status, text the output must contain)
CASES = {
    "gradcam": (["--images={run}/images"], 0, ["Wrote 5 files"]),
    "features": (["--images={run}/images/2.png", "--mode=features"], 0,
                 ["Wrote 5 files"]),
    "filters": (["--mode=filters", "--layer=block1_relu1,block4_relu2",
                 "--filters=4", "--filter_steps=3"], 0, ["Wrote 2 files"]),
    "bad layer": (["--images={run}/images/2.png", "--layer=block9_conv1"], 1,
                  ["error: No layer 'block9_conv1'", "block1_conv1"]),
    "no images": (["--images={run}/none.png"], 1,
                  ["error: --images: no such file or folder: {run}/none.png"]),
    "imagenet vgg11": (["--mode=filters", "--weights=imagenet", "--model=vgg11"], 1,
                       ["error: --weights=imagenet needs --model=vgg16 or vgg19"]),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A recipe-like run folder: model.keras, summary.json, images."""
    root = tmp_path_factory.mktemp("explain")
    keras.utils.set_random_seed(0)
    model = spread(keras_vgg.VGG("A", batch_norm=True, classes=10,
                                 input_shape=(32, 32, 3), **SMOKE),
                   np.random.default_rng(0))
    model.save(root / "model.keras")
    (root / "summary.json").write_text(json.dumps(
        {"mean_rgb": list(MEAN), "class_names": NAMES, "eval_scale": Q}))
    images = root / "images"
    images.mkdir()
    digits, _ = sources.digits()
    for i in range(3):
        (images / f"{i}.png").write_bytes(encoded(digits[i]))
    # A larger JPEG of another shape: the central crop at Q, as evaluation.
    photo = np.random.default_rng(1).integers(0, 256, (48, 60, 3), dtype=np.uint8)
    (images / "photo.jpg").write_bytes(tf.io.encode_jpeg(photo).numpy())
    return root


@pytest.fixture(scope="module")
def written(run):
    """Each mode, in this process, through the command's own functions."""
    model, preprocess, names = command.prepare(str(run / "model.keras"))
    files = command.list_images([str(run / "images")])
    out = {mode: run / "out" / mode for mode in command.MODES}
    for folder in out.values():
        folder.mkdir(parents=True)
    progress = keras.utils.Progbar(len(files), verbose=0)
    command.explain_gradcam(model, files, preprocess, names, out["gradcam"], None,
                            None, 5, 16, progress)
    command.explain_features(model, files[2:3], preprocess, out["features"], [],
                             16, progress)
    command.explain_filters(model, out["filters"], ["block1_relu1", "block4_relu2"],
                            4, 48, 3, progress)
    return out


@pytest.mark.slow
def test_command_lines(run):
    """The command lines, side by side; each case's status and message."""
    procs = {}
    for name, (args, _, _) in CASES.items():
        procs[name] = subprocess.Popen(
            [sys.executable, str(ROOT / "recipes" / "explain.py"),
             f"--model={run / 'model.keras'}",   # a later --model wins
             f"--output={run / 'cli' / name.replace(' ', '_')}",
             *[a.format(run=run) for a in args]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=recipe_env())
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        _, status, needed = CASES[name]
        assert proc.returncode == status, (name, out[-2000:], err[-3000:])
        for text in needed:
            assert text.format(run=run) in out + err, (name, text, err[-2000:])
        assert "Traceback" not in err, (name, err[-3000:])
    gradcam = run / "cli" / "gradcam"
    assert sorted(p.name for p in gradcam.iterdir()) == [
        "0_gradcam.png", "1_gradcam.png", "2_gradcam.png", "photo_gradcam.png",
        "predictions.json"]
    with Image.open(gradcam / "photo_gradcam.png") as png:
        assert png.size == (900, 320)


def test_gradcam_writes_a_readable_overlay_per_image(written):
    out = written["gradcam"]
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["0_gradcam.png", "1_gradcam.png", "2_gradcam.png",
                    "photo_gradcam.png"]
    for name in pngs:
        with Image.open(out / name) as png:
            assert png.size == (900, 320)
            pixels = np.asarray(png.convert("RGB"), "float32")
        # The overlay panel (the middle third) shows an image under a
        # heatmap, not a flat colour; the inferno map is warm where high.
        overlay = pixels[60:280, 320:560]
        assert overlay.std() > 20, name
        assert (overlay[..., 0] - overlay[..., 2] > 60).mean() > 0.01, name
        assert pixels[:, 600:].std() > 20, name     # the top-5 bars and labels


def test_top_classes_come_from_evaluation_preprocessing(run, written):
    """The probabilities listed are the model's on evaluation's input: the
    central crop at the run's Q, minus the run's mean RGB."""
    model = keras.saving.load_model(run / "model.keras")
    predictions = json.loads((written["gradcam"] / "predictions.json").read_text())
    for path, entry in predictions.items():
        x = data_lib.normalize(data_lib.crop(tf.io.read_file(path), Q, 32), MEAN)
        probabilities = model.predict(x[None], verbose=0)[0]
        order = np.argsort(-probabilities)[:5]
        assert [name for name, _ in entry["top"]] == [NAMES[i] for i in order]
        np.testing.assert_allclose([p for _, p in entry["top"]],
                                   probabilities[order], rtol=1e-4, atol=1e-6)
        assert entry["explained"] == entry["top"][0][0]
        assert entry["layer"] == "block5_relu2"


def test_feature_and_filter_grids(written):
    features = sorted(p.name for p in written["features"].glob("*.png"))
    assert features == [f"2_block{b}_relu{i}.png" for b, i in
                        ((1, 1), (2, 1), (3, 2), (4, 2), (5, 2))]
    filters = sorted(p.name for p in written["filters"].glob("*.png"))
    assert filters == ["filters_block1_relu1.png", "filters_block4_relu2.png"]
    for path in [written["features"] / features[0], written["filters"] / filters[0]]:
        with Image.open(path) as png:
            assert min(png.size) > 100
            assert np.asarray(png.convert("L"), "float32").std() > 10, path


def test_imagenet_weights_bring_imagenet_names_and_preprocessing(run, monkeypatch, tmp_path):
    """--model=vgg16 --weights=imagenet: ImageNet's class names, mean and Q=256
    with the central 224 crop. (A narrow VGG-16 stands in for the 528 MB file,
    which keras_vgg.VGG16(weights="imagenet") fetches; tests/test_pretrained.py
    checks that path.)"""
    keras.utils.set_random_seed(0)
    stand_in = keras_vgg.VGG16(widths=(4, 8, 8, 16, 16), fc_units=32)
    monkeypatch.setattr(keras_vgg, "VGG16", lambda weights: stand_in)
    model, preprocess, names = command.prepare("vgg16", "imagenet")
    assert model is stand_in and (preprocess.size, preprocess.scale) == (224, 256)
    assert preprocess.mean_rgb == data_lib.IMAGENET_MEAN_RGB
    assert names[281] == "tabby" and len(names) == 1000
    files = [run / "images" / "photo.jpg"]
    command.explain_gradcam(model, files, preprocess, names, tmp_path, None, 281,
                            5, 16, keras.utils.Progbar(1, verbose=0))
    entry, = json.loads((tmp_path / "predictions.json").read_text()).values()
    assert entry["explained"] == "tabby" and entry["layer"] == "block5_conv3"
    assert all(name in names for name, _ in entry["top"])
