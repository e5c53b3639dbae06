"""Tests of export/export_vgg.py: SavedModel (TF Serving) and ONNX round trips."""

import io
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_vgg
from conftest import TINY

tf = pytest.importorskip("tensorflow")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
Image = pytest.importorskip("PIL.Image")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from keras_vgg.export import export_vgg, onnx_export  # noqa: E402
from keras_vgg.recipes.data import rescale  # noqa: E402

SAMPLE_JPEG = os.path.join(os.path.dirname(pytest.importorskip("sklearn").__file__),
                           "datasets", "images", "china.jpg")


def _env():
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
                TF_CPP_MIN_LOG_LEVEL="2", **export_vgg.PROCESS_ENV)


def _dir_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def _weights_bytes(model):
    return sum(w.numpy().nbytes for w in model.weights)


def _dense_reference(model, x):
    """Dense evaluation computed independently of `fully_convolutional`: the
    original FC head applied to every 7x7 window of the feature map, softmax
    per window, averaged (the paper's section 3.2)."""
    features = keras_vgg.feature_extractor(model, ["block5_pool"])(x)
    features = np.asarray(features)
    window = model.get_layer("flatten").input.shape[1]
    head = [model.get_layer(n) for n in ("fc1", "fc2", "predictions")]
    outputs = []
    for i in range(features.shape[1] - window + 1):
        for j in range(features.shape[2] - window + 1):
            y = features[:, i:i + window, j:j + window, :].reshape(len(x), -1)
            for layer in head:
                y = layer(y)
            outputs.append(np.asarray(y))
    assert len(outputs) > 1  # a real dense evaluation, not one window
    return np.mean(outputs, axis=0)


def _images(rng, n, height, width):
    # Raw pixels with structure (a gradient plus noise), then preprocessed.
    pixels = rng.uniform(0, 255, (n, height, width, 3)).astype("float32")
    return keras_vgg.preprocess_input(pixels)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny 1000-class VGG-16 saved as `.keras`, exported in both formats."""
    keras.utils.set_random_seed(1)
    root = tmp_path_factory.mktemp("export")
    model = keras_vgg.VGG16(**TINY)
    path = str(root / "tiny.keras")
    model.save(path)
    result = export_vgg.export(path, str(root / "out"), "tiny")
    keras.backend.clear_session()
    return {"model": path, "root": root, **result}


@pytest.fixture(scope="module")
def tiny10(tmp_path_factory):
    """A tiny 10-class VGG-11, SavedModel with flip averaging at Q=240."""
    keras.utils.set_random_seed(2)
    root = tmp_path_factory.mktemp("export10")
    model = keras_vgg.VGG11(classes=10, **TINY)
    path = str(root / "tiny10.keras")
    model.save(path)
    result = export_vgg.export(path, str(root / "out"), "tiny10", version=7,
                               formats="saved_model", test_scale=240, flip=True, top_k=3)
    keras.backend.clear_session()
    return {"model": path, **result}


def _load(path):
    return keras.saving.load_model(path, compile=False)


# --- layout, versions, atomicity -------------------------------------------


def test_layout_and_next_version(tiny, tmp_path):
    assert tiny["version"] == 1
    assert sorted(os.listdir(os.path.dirname(tiny["path"]))) == ["1"]
    files = sorted(os.listdir(tiny["path"]))
    for expected in ("saved_model.pb", "variables", "model.onnx", "model.onnx.data"):
        assert expected in files
    assert os.stat(tiny["path"]).st_mode & 0o005  # readable by TF Serving's user
    # The next export gets the next version; an existing one is never replaced.
    out = str(tiny["root"] / "out")
    again = export_vgg.export(tiny["model"], out, "tiny", formats=["saved_model"])
    assert again["version"] == 2
    with pytest.raises(FileExistsError, match="Version 2 already exists"):
        export_vgg.export(tiny["model"], out, "tiny", version=2, formats="saved_model")
    assert sorted(os.listdir(os.path.dirname(tiny["path"]))) == ["1", "2"]


def test_failed_export_leaves_no_version(tiny, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("conversion failed")

    # The SavedModel is written first, then ONNX fails: nothing must remain.
    monkeypatch.setattr(export_vgg, "export_onnx", fail)
    with pytest.raises(RuntimeError, match="conversion failed"):
        export_vgg.export(tiny["model"], str(tmp_path), "m")
    assert os.listdir(tmp_path / "m") == []


@pytest.mark.parametrize("kwargs, match", [
    (dict(formats="tflite"), "Unknown export format"),
    (dict(version=0), "positive integer"),
    (dict(test_scale=200), "at least 224"),
    (dict(top_k=1001), "at most the number of classes"),
    (dict(name="a/b"), "plain directory name"),
])
def test_bad_arguments(tiny, tmp_path, kwargs, match):
    kwargs = {"name": "m", **kwargs}
    with pytest.raises(ValueError, match=match):
        export_vgg.export(tiny["model"], str(tmp_path), **kwargs)
    assert not os.path.exists(tmp_path / "m")  # arguments are checked first


def test_not_a_vgg(tmp_path):
    inputs = keras.Input((32, 32, 3))
    other = keras.Model(inputs, keras.layers.Dense(4, name="predictions")(
        keras.layers.Flatten()(inputs)))
    other.save(tmp_path / "other.keras")
    with pytest.raises(ValueError, match="is not a VGG classifier.*include_top=True"):
        export_vgg.export(str(tmp_path / "other.keras"), str(tmp_path), "m")
    headless = keras_vgg.VGG16(include_top=False, **TINY)
    headless.save(tmp_path / "headless.keras")
    with pytest.raises(ValueError, match="is not a VGG classifier.*has no layer"):
        export_vgg.export(str(tmp_path / "headless.keras"), str(tmp_path), "m")
    (tmp_path / "junk.keras").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="is not a loadable .keras model"):
        export_vgg.export(str(tmp_path / "junk.keras"), str(tmp_path), "m")
    with pytest.raises(ValueError, match="not found"):
        export_vgg.export(str(tmp_path / "missing.keras"), str(tmp_path), "m")
    assert not (tmp_path / "m").exists()  # checked before anything is written


# --- SavedModel -------------------------------------------------------------


def test_saved_model_size_is_the_weights_size(tiny):
    weights = _weights_bytes(_load(tiny["model"]))
    variables = _dir_bytes(os.path.join(tiny["path"], "variables"))
    # Keras' model.export writes every weight twice; this writes it once
    # (plus a small checkpoint index).
    assert weights <= variables < weights * 1.05 + 32 * 1024


def test_saved_model_in_fresh_process(tiny, rng, tmp_path):
    """Loaded by tf.saved_model.load in another process: 224 equals the Keras
    model, a larger non-square size equals the dense-evaluation reference."""
    model = _load(tiny["model"])
    x224 = _images(rng, 2, 224, 224)
    x_big = _images(rng, 2, 256, 320)
    np.save(tmp_path / "x224.npy", x224)
    np.save(tmp_path / "x_big.npy", x_big)
    script = textwrap.dedent(f"""
        import json, numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({tiny['path']!r})
        f = loaded.signatures["serving_default"]
        out = {{}}
        for name in ("x224", "x_big"):
            y = f(images=tf.constant(np.load({str(tmp_path)!r} + f"/{{name}}.npy")))
            for k, v in y.items():
                np.save({str(tmp_path)!r} + f"/{{name}}_{{k}}.npy", v.numpy())
        print(json.dumps(sorted(loaded.signatures.keys())))
    """)
    done = subprocess.run([sys.executable, "-c", script], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [
        "serve_image_bytes", "serving_default"]

    def out(name, key):
        return np.load(tmp_path / f"{name}_{key}.npy", allow_pickle=True)

    expected = np.asarray(model(x224, training=False))
    # Random tiny weights give probabilities near 1/1000: compare relatively.
    assert np.abs(expected[0] - expected[1]).max() > 1e-6
    np.testing.assert_allclose(out("x224", "probabilities"), expected, rtol=1e-4, atol=1e-8)
    expected_big = _dense_reference(model, x_big)
    np.testing.assert_allclose(out("x_big", "probabilities"), expected_big, rtol=1e-4, atol=1e-8)
    top = np.argsort(-expected_big, axis=1)[:, :5]
    np.testing.assert_array_equal(out("x_big", "top_k_classes"), top)
    np.testing.assert_allclose(out("x_big", "top_k_scores"),
                               np.take_along_axis(expected_big, top, 1), rtol=1e-4)
    names = [n for _, n in keras_vgg.imagenet_classes()]
    assert [x.decode() for x in out("x_big", "top_k_labels")[0]] == [names[i] for i in top[0]]


def test_saved_model_cli_lists_signatures(tiny):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(cli):
        pytest.skip("saved_model_cli is not installed next to this Python")
    done = subprocess.run([cli, "show", "--dir", tiny["path"], "--all"], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    text = done.stdout
    for expected in ("signature_def['serving_default']", "signature_def['serve_image_bytes']",
                     "inputs['images']", "inputs['image_bytes']", "outputs['probabilities']",
                     "outputs['top_k_classes']", "outputs['top_k_scores']",
                     "outputs['top_k_labels']", "shape: (-1, -1, -1, 3)", "DT_STRING"):
        assert expected in text, f"{expected!r} missing from saved_model_cli output"


def _png(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _tensor_path(serving_default, pixels, scale, flip=False):
    """The tensor signature on the same pixels, rescaled and preprocessed."""
    x = keras_vgg.preprocess_input(np.asarray(rescale(pixels, scale))[None])
    probabilities = serving_default(images=tf.constant(x))["probabilities"].numpy()
    if flip:
        flipped = serving_default(images=tf.constant(x[:, :, ::-1]))["probabilities"].numpy()
        probabilities = (probabilities + flipped) / 2
    return probabilities[0]


def test_image_bytes_equal_tensor_path(tiny, rng):
    loaded = tf.saved_model.load(tiny["path"])
    serve_bytes = loaded.signatures["serve_image_bytes"]
    serving_default = loaded.signatures["serving_default"]
    jpeg = open(SAMPLE_JPEG, "rb").read()
    jpeg_pixels = np.asarray(Image.open(SAMPLE_JPEG).convert("RGB"))  # 427x640
    png_pixels = rng.integers(0, 256, (300, 250, 3), dtype=np.uint8)  # portrait
    out = serve_bytes(image_bytes=tf.constant([jpeg, _png(png_pixels)]))
    assert out["probabilities"].shape == (2, 1000)
    for i, pixels in enumerate((jpeg_pixels, png_pixels)):
        np.testing.assert_allclose(out["probabilities"][i].numpy(),
                                   _tensor_path(serving_default, pixels, 256),
                                   rtol=1e-4, atol=1e-8)
    assert out["top_k_labels"].shape == (2, 5)


def test_image_bytes_flip_and_scale(tiny10, rng):
    loaded = tf.saved_model.load(tiny10["path"])
    assert os.path.basename(tiny10["path"]) == "7"
    serving_default = loaded.signatures["serving_default"]
    pixels = rng.integers(0, 256, (230, 300, 3), dtype=np.uint8)
    out = loaded.signatures["serve_image_bytes"](image_bytes=tf.constant([_png(pixels)]))
    assert sorted(out) == ["probabilities", "top_k_classes", "top_k_scores"]  # no labels
    assert out["top_k_classes"].shape == (1, 3)
    expected = _tensor_path(serving_default, pixels, 240, flip=True)
    unflipped = _tensor_path(serving_default, pixels, 240, flip=False)
    assert np.abs(expected - unflipped).max() > 1e-6  # flipping changes something
    np.testing.assert_allclose(out["probabilities"][0].numpy(), expected, rtol=1e-4, atol=1e-8)


def test_corrupt_bytes_give_clear_error(tiny):
    serve_bytes = tf.saved_model.load(tiny["path"]).signatures["serve_image_bytes"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="expects JPEG or PNG"):
        serve_bytes(image_bytes=tf.constant([b"this is not an image"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="expects JPEG or PNG"):
        serve_bytes(image_bytes=tf.constant([b""]))
    truncated = open(SAMPLE_JPEG, "rb").read()[:2000]
    with pytest.raises(tf.errors.InvalidArgumentError, match="(?i)jpeg"):
        serve_bytes(image_bytes=tf.constant([truncated]))


def test_too_small_input_gives_clear_error(tiny, rng):
    serving_default = tf.saved_model.load(tiny["path"]).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"at least 224x224.*Received height, width:\] \[200\] \[300\]"):
        serving_default(images=tf.constant(_images(rng, 1, 200, 300)))


# --- ONNX --------------------------------------------------------------------


def test_onnx_round_trip(tiny, rng):
    path = os.path.join(tiny["path"], "model.onnx")
    onnx.checker.check_model(path, full_check=True)
    proto = onnx.load(path, load_external_data=False)
    assert proto.opset_import[0].version == onnx_export.ONNX_OPSET
    (images,) = proto.graph.input
    assert images.name == "images"
    assert [d.dim_param or d.dim_value for d in images.type.tensor_type.shape.dim] == [
        "batch", "height", "width", 3]
    assert [o.name for o in proto.graph.output] == [
        "probabilities", "top_k_classes", "top_k_scores"]
    # The weights are initializers feeding the Conv nodes directly: the
    # kernel transposes tf2onnx inserted for weight inputs were folded.
    model = _load(tiny["model"])
    conv_inputs = {i for n in proto.graph.node if n.op_type == "Conv" for i in n.input}
    weights = [w.path for w in model.weights]
    assert set(weights) <= conv_inputs
    assert not [n for n in proto.graph.node if n.op_type == "Transpose"
                and n.input[0] in weights]
    assert _weights_bytes(model) <= os.path.getsize(path + ".data") < _weights_bytes(model) + 2**20
    assert tiny["onnx_max_abs_diff"] <= 1e-4

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x224 = _images(rng, 2, 224, 224)
    probabilities, classes, scores = session.run(None, {"images": x224})
    np.testing.assert_allclose(probabilities, np.asarray(model(x224)), rtol=1e-4, atol=1e-8)
    x_big = _images(rng, 3, 288, 240)
    probabilities, classes, scores = session.run(None, {"images": x_big})
    expected = _dense_reference(model, x_big)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-8)
    np.testing.assert_array_equal(classes, np.argsort(-expected, axis=1)[:, :5])
    np.testing.assert_allclose(scores, np.sort(expected, axis=1)[:, ::-1][:, :5], rtol=1e-4)


@pytest.mark.parametrize("config, batch_norm", [("A-LRN", False), ("B", True), ("C", False)])
def test_onnx_other_configurations(tmp_path, rng, config, batch_norm):
    """LRN, BatchNorm (its moving statistics are non-trainable weights) and
    1x1 convs convert too; `export` itself compares ONNX with TensorFlow.
    BatchNorm is folded into the convolutions: without LRN the graph is a
    plain chain of Conv, Relu and MaxPool, with one Transpose (of the NHWC
    input)."""
    model = keras_vgg.VGG(config, batch_norm=batch_norm, classes=10, **TINY)
    if batch_norm:  # non-trivial statistics, scale and shift
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                for weight, low, high in ((layer.moving_mean, -1, 1),
                                          (layer.moving_variance, 0.5, 2),
                                          (layer.gamma, 0.5, 2), (layer.beta, -1, 1)):
                    weight.assign(rng.uniform(low, high, weight.shape).astype("float32"))
    result = export_vgg.export(model, str(tmp_path), "m", formats="onnx", top_k=3)
    assert result["onnx_max_abs_diff"] <= 1e-4
    path = os.path.join(result["path"], "model.onnx")
    ops = [n.op_type for n in onnx.load(path, load_external_data=False).graph.node]
    if config != "A-LRN":   # LRN itself is Mul, Pad, Pow... in ONNX
        assert ops.count("Transpose") == 1 and not {"Mul", "Add", "BatchNormalization"} & set(ops)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = _images(rng, 1, 224, 256)
    expected = np.asarray(keras_vgg.fully_convolutional(model)(x))
    np.testing.assert_allclose(session.run(["probabilities"], {"images": x})[0], expected,
                               rtol=1e-4, atol=1e-7)


def test_onnx_check_catches_a_wrong_model(tiny):
    # The built-in check compares with the Keras model it is given: the same
    # model with sharper logits must fail it.
    model = _load(tiny["model"])
    kernel, bias = model.get_layer("predictions").get_weights()
    model.get_layer("predictions").set_weights([kernel * 20, bias])
    other = keras_vgg.fully_convolutional(model)
    with pytest.raises(AssertionError, match="differs from TensorFlow"):
        onnx_export.check_onnx_model(other, os.path.join(tiny["path"], "model.onnx"))


# --- command line ---------------------------------------------------------------


def test_command_line(tiny, tmp_path):
    script = os.path.join(REPO, "export", "export_vgg.py")
    done = subprocess.run(
        [sys.executable, script, f"--model={tiny['model']}", f"--output={tmp_path}",
         "--name=cli", "--version=3", "--format=onnx"],
        env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == str(tmp_path / "cli" / "3")
    assert sorted(os.listdir(tmp_path / "cli" / "3")) == ["model.onnx", "model.onnx.data"]
    assert "ONNX vs TensorFlow" in done.stderr  # progress is shown
    done = subprocess.run(
        [sys.executable, script, f"--model={tiny['model']}", f"--output={tmp_path}",
         "--name=cli", "--format=pt"], env=_env(), capture_output=True, text=True,
        timeout=300)
    assert done.returncode != 0
    assert "Unknown export format(s) ['pt']" in done.stderr


# --- full size ----------------------------------------------------------------------


@pytest.mark.slow
def test_full_size_vgg16(tmp_path, rng):
    """VGG-16 at full size (random weights), both formats, through the CLI.

    Building the model and the export each run in a child process, so this
    process only ever holds the two exported artifacts (peak ~3 GiB each).
    """
    np.save(tmp_path / "x224.npy", _images(rng, 1, 224, 224))
    np.save(tmp_path / "x_big.npy", _images(rng, 1, 256, 352))
    path = str(tmp_path / "vgg16.keras")
    script = textwrap.dedent(f"""
        import numpy as np, keras, keras_vgg
        keras.utils.set_random_seed(0)
        model = keras_vgg.VGG16()
        model.save({path!r})
        d = {str(tmp_path)!r}
        np.save(d + "/ref224.npy", model(np.load(d + "/x224.npy")))
        dense = keras_vgg.fully_convolutional(model)
        np.save(d + "/ref_big.npy", dense(np.load(d + "/x_big.npy")))
        print(sum(w.numpy().nbytes for w in model.weights))
    """)
    done = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    weights = int(done.stdout.strip().splitlines()[-1])
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "export", "export_vgg.py"), f"--model={path}",
         f"--output={tmp_path}", "--name=vgg16"],
        env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    version = str(tmp_path / "vgg16" / "1")

    variables = _dir_bytes(os.path.join(version, "variables"))
    assert weights <= variables < weights * 1.01  # 553 MB, not Keras' 1.1 GB
    cases = [(np.load(tmp_path / f"{n}.npy"), np.load(tmp_path / f"ref{r}.npy"))
             for n, r in (("x224", "224"), ("x_big", "_big"))]
    serving_default = tf.saved_model.load(version).signatures["serving_default"]
    for x, expected in cases:
        probabilities = serving_default(images=tf.constant(x))["probabilities"].numpy()
        np.testing.assert_allclose(probabilities, expected, rtol=1e-3, atol=1e-7)
    del serving_default

    session = ort.InferenceSession(os.path.join(version, "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    for x, expected in cases:
        (probabilities,) = session.run(["probabilities"], {"images": x})
        assert np.abs(probabilities - expected).max() < 1e-4
        np.testing.assert_allclose(probabilities, expected, rtol=1e-3, atol=1e-7)
