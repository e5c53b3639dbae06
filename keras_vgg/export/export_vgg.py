"""Exports a trained VGG (`.keras` file) for TF Serving (SavedModel) and ONNX.

Both artifacts run the paper's dense evaluation (section 3.2): the FC layers
become convolutions (`keras_vgg.fully_convolutional`), so images of any size
of at least 224x224 are classified by averaging the class score map.

```
python export/export_vgg.py --model=vgg16.keras --output=/models --name=vgg16
    [--version=N] [--format=saved_model,onnx] [--test_scale=256] [--flip]
```

writes `/models/vgg16/N/` (N defaults to the next free integer) with

* `saved_model.pb`, `variables/`: signatures `serving_default` (preprocessed
  float images `[batch, height, width, 3]`) and `serve_image_bytes` (encoded
  JPEG/PNG strings, decoded, isotropically rescaled to `test_scale` and
  preprocessed in the graph), both returning `probabilities`, `top_k_classes`,
  `top_k_scores` and, for 1000-class (ImageNet) models, `top_k_labels`;
* `model.onnx` and `model.onnx.data` (weights as ONNX external data): input
  `images` like `serving_default`'s, outputs `probabilities`, `top_k_classes`,
  `top_k_scores`.

The version directory is built under a hidden temporary name next to it and
renamed into place at the end, so a failed export leaves nothing TF Serving
would pick up. See the README, section "Export" for serving and for why the ONNX path hands
the weights to tf2onnx as graph inputs.

This module is the command and the versioned, atomic write; each format's
conversion lives in its own module (`serving` for the SavedModel,
`onnx_export` for ONNX).
"""

import gc
import os
import shutil
import sys
import tempfile
import time

from absl import app, flags, logging

from keras_vgg.export import deploy, litert_export
from keras_vgg.export.choices import parse_choices
from keras_vgg.export.onnx_export import ONNX_FILE, check_onnx_model, export_onnx
from keras_vgg.export.serving import (DEFAULT_MAX_ASPECT_RATIO, DEFAULT_MAX_IMAGES,
                                      DEFAULT_MAX_PIXELS,
                                      DEFAULT_TEST_SCALE, DEFAULT_TOP_K,
                                      export_saved_model)

# TensorFlow, Keras and the ONNX packages are imported inside the functions
# (here and in `serving` and `onnx_export`): the command line must set
# PROCESS_ENV before TensorFlow loads, and benchmark_export.py reads it
# without loading TensorFlow.

FORMATS = ("saved_model", "onnx", "onnx_int8", "litert")
DEFAULT_FORMATS = ("saved_model", "onnx")
# Set by the command line before TensorFlow loads. oneDNN's allocator (TF's
# default on x86) keeps every freed buffer for reuse, so the temporaries of
# loading a model (random initialisation of fc1 alone: 3 x 0.4 GiB) stay in
# RSS for the rest of the export; the system allocator gives them back.
# Measured on VGG-11 loading: RSS after load 1.96 -> 1.18 GiB.
PROCESS_ENV = {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1"}


def export(model, output, name, version=None, formats=DEFAULT_FORMATS,
           test_scale=DEFAULT_TEST_SCALE, flip=False, top_k=None,
           check_onnx=True, mean_rgb=None, max_pixels=DEFAULT_MAX_PIXELS,
           max_images=DEFAULT_MAX_IMAGES, max_aspect_ratio=DEFAULT_MAX_ASPECT_RATIO,
           trust_model_code=False, deploy_options=None):
    """Exports a VGG classifier as a TF Serving SavedModel and/or ONNX.

    Args:
        model: path to a `.keras` file of a VGG with its classifier
            (`include_top=True`), or such a `keras.Model`.
        output: base directory; the export goes to `output/name/version/`.
        name: model name (TF Serving's `MODEL_NAME`), a plain directory name.
        version: positive integer; defaults to one more than the largest
            existing version (1 if none). An existing version is never
            overwritten.
        formats: any of `"saved_model"`, `"onnx"`, `"onnx_int8"` (ONNX
            Runtime static int8), `"litert"` (`.tflite` files, see
            `deploy_options`), as a list or a comma-separated string.
        test_scale: Q, the smallest side images given as bytes are rescaled
            to (paper, section 3.2); at least the model's input size.
        flip: also classify the horizontally flipped image given as bytes and
            average the two (paper, section 3.2).
        top_k: number of classes in `top_k_*` outputs (at most `classes`);
            default 5, or every class of a model with fewer.
        check_onnx: check the ONNX file with `onnx.checker` and compare it with
            TensorFlow under onnxruntime (raises if the difference exceeds
            `ONNX_TOLERANCE`).
        mean_rgb: the mean RGB `serve_image_bytes` subtracts; default the one
            in the `summary.json` of the run that wrote the `.keras` file,
            else ImageNet's (`keras_vgg.preprocess_input`).
        max_pixels: `serve_image_bytes` refuses, from their headers and
            before decoding, images of more pixels (decompression bombs).
        max_images: `serve_image_bytes` refuses requests of more images.
        trust_model_code: load a `.keras` file even if it runs code on
            loading (a Lambda layer); refused by default.
        deploy_options: a `keras_vgg.export.deploy.Options` (LiteRT
            precisions, calibration images) for `onnx_int8` and `litert`.
        max_aspect_ratio: `serve_image_bytes` refuses images whose longest
            side is more than this times the shortest (rescaled to Q, a thin
            strip becomes a huge image).

    Returns:
        A dict: `path` (the version directory), `version`, `formats`, for
        ONNX `onnx_max_abs_diff` (None when `check_onnx=False`), and for the
        deployment formats `artifacts`: each file's size and check against
        TensorFlow (top-1 agreement, difference).

    Raises:
        ValueError: the model is not an exportable VGG, or an argument is out
            of range.
        FileExistsError: `version` already exists.
    """
    formats = _parse_formats(formats)
    deploy_options = deploy_options or deploy.Options()
    deploy.check_options(formats, deploy_options)   # before any slow step
    if not name or os.sep in name or name.startswith(".") or name != name.strip():
        raise ValueError(f"`name` must be a plain directory name. Received: name={name!r}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"`top_k` must be a positive integer. Received: top_k={top_k!r}")
    if isinstance(version, str) and version.isdigit():
        version = int(version)
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)
                                or version < 1):
        raise ValueError(f"`version` must be a positive integer. Received: version={version!r}")
    for value, what in ((max_pixels, "max_pixels"), (max_images, "max_images"),
                        (max_aspect_ratio, "max_aspect_ratio")):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{what}` must be a positive integer. Received: "
                             f"{what}={value!r}")
    if mean_rgb is None:
        from keras_vgg.recipes import runs
        mean_rgb = runs.model_mean(model, None) if not hasattr(model, "layers") \
            else None
    started = time.monotonic()
    dense, info = _dense_model(model, trust_model_code)
    top_k = min(DEFAULT_TOP_K, info["classes"]) if top_k is None else top_k
    if top_k > info["classes"]:
        raise ValueError(f"`top_k` must be at most the number of classes "
                         f"({info['classes']}). Received: top_k={top_k}")
    if not isinstance(test_scale, int) or test_scale < max(info["min_size"]):
        raise ValueError(
            f"`test_scale` must be an integer of at least "
            f"{max(info['min_size'])}, the model's input size. "
            f"Received: test_scale={test_scale!r}")

    base = os.path.join(output, name)
    os.makedirs(base, exist_ok=True)
    version = _resolve_version(base, version)
    final = os.path.join(base, str(version))
    # A hidden sibling on the same file system: os.rename is then atomic, and
    # TF Serving ignores directories whose name is not an integer.
    staging = tempfile.mkdtemp(prefix=f".{version}.partial-", dir=base)
    result = {"path": final, "version": version, "formats": formats,
              "serve_image_bytes": {"max_pixels": max_pixels, "max_images": max_images,
                                    "max_aspect_ratio": max_aspect_ratio}}
    try:
        if "saved_model" in formats:
            _log_stage("SavedModel", started)
            export_saved_model(dense, staging, test_scale=test_scale, flip=flip,
                               top_k=top_k, mean_rgb=mean_rgb, max_pixels=max_pixels,
                               max_images=max_images, max_aspect=max_aspect_ratio)
        if "onnx" in formats:
            _log_stage("ONNX", started)
            onnx_path = os.path.join(staging, ONNX_FILE)
            export_onnx(dense, onnx_path, top_k=top_k)
            result["onnx_max_abs_diff"] = None
            if check_onnx:
                _log_stage("ONNX check", started)
                result["onnx_max_abs_diff"] = check_onnx_model(dense, onnx_path)
        result["artifacts"] = deploy.write(
            dense, staging, formats, deploy_options, image_size=max(info["min_size"]),
            test_scale=test_scale, mean_rgb=mean_rgb or _imagenet_mean(),
            top_k=top_k, log_stage=lambda stage: _log_stage(stage, started))
        if os.path.exists(final):
            raise FileExistsError(f"Version {version} appeared in {base} during "
                                  "the export; not overwriting it.")
        # mkdtemp made it private (0700); TF Serving may run as another user.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logging.info("Exported %s in %.1f s: %s", "+".join(formats),
                 time.monotonic() - started, final)
    return result


def _imagenet_mean():
    from keras_vgg.recipes.data import IMAGENET_MEAN_RGB
    return IMAGENET_MEAN_RGB


def _log_stage(stage, started):
    logging.info("[%6.1f s] %s ...", time.monotonic() - started, stage)


def _parse_formats(formats):
    return parse_choices(formats, FORMATS, "export format")


def _resolve_version(base, version):
    existing = [int(d) for d in os.listdir(base) if d.isdigit()]
    if version is None:
        return max(existing, default=0) + 1
    if version in existing:
        raise FileExistsError(
            f"Version {version} already exists in {base}; TF Serving versions "
            f"are immutable. Pick another version (existing: {sorted(existing)}) "
            "or leave it out for the next free one.")
    return version


def _dense_model(model, trust=False):
    """Loads `model` and returns its fully-convolutional form and facts about it."""
    import keras

    import keras_vgg  # registers the custom layers, so `.keras` files load

    source = f"Model {model.name!r}" if isinstance(model, keras.Model) else repr(model)
    if not isinstance(model, keras.Model):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise ValueError(f"Model file not found. Received: model={path!r}")
        if not path.endswith(".keras"):
            raise ValueError("Expected a Keras v3 `.keras` model file. "
                             f"Received: model={path!r}")
        logging.info("Loading %s", path)
        from keras_vgg.recipes import runs
        model = runs.load_model(path, trust)
    if _is_dense(model):
        dense = model  # already takes any size (a transfer's SVM classifier)
    else:
        try:
            dense = keras_vgg.fully_convolutional(model)
        except ValueError as e:
            raise ValueError(
                f"{source} is not a VGG classifier that can be exported (a "
                "keras_vgg or keras.applications VGG with its top, or a model "
                f"of keras-vgg-finetune): {e}") from e
    if tuple(dense.input.shape[1:]) != (None, None, 3):
        raise ValueError(
            "Export needs a channels_last VGG on 3-channel (RGB) images, whose "
            f"dense form takes (None, None, None, 3). Received a model whose "
            f"dense form takes {tuple(dense.input.shape)}.")
    min_size = dense.get_layer("min_input_size").min_size
    classes = int(dense.output.shape[-1])
    # `dense` has its own copy of the weights; free the loaded model's now
    # (Keras models hold reference cycles), not at some later collection.
    del model
    gc.collect()
    return dense, {"classes": classes, "min_size": min_size}


def _is_dense(model):
    """Whether `model` is already a classifier of images of any size: it
    checks its input size in a `min_input_size` layer (as
    `fully_convolutional`'s models do) and returns one score per class."""
    names = {layer.name for layer in model.layers}
    return "min_input_size" in names and len(model.output.shape) == 2 and \
        tuple(model.input.shape[1:3]) == (None, None)


# --------------------------------------------------------------------------
# Command line

FLAGS = flags.FLAGS


def define_flags():
    """Defines the command-line flags (only when run as a script, so that
    importing this module next to other absl programs cannot clash)."""
    flags.DEFINE_string("model", None, "Trained VGG, a `.keras` file.")
    flags.DEFINE_string("output", None, "Base directory; writes OUTPUT/NAME/VERSION/.")
    flags.DEFINE_string("name", None, "Model name (TF Serving's MODEL_NAME).")
    flags.DEFINE_integer("version", None, "Version; defaults to the next free integer.")
    flags.DEFINE_list("format", list(DEFAULT_FORMATS), "Formats to write: saved_model "
                      "(TF Serving), onnx, onnx_int8 (ONNX Runtime static int8), "
                      "litert (.tflite at --litert_precisions).")
    flags.DEFINE_list("litert_precisions", list(litert_export.PRECISIONS),
                      "LiteRT models to write: float32, float16 (weights), "
                      "dynamic_int8 (int8 weights), int8 (full integer, calibrated).")
    flags.DEFINE_bool("litert_dense", False, "LiteRT models take images of any size "
                      "of at least the input size (the runtime resizes the input), "
                      "not the fixed input size.")
    flags.DEFINE_bool("int8_io", False, "Full-integer LiteRT with int8 inputs and "
                      "outputs (integer-only accelerators).")
    flags.DEFINE_string("calibration_data", None, "Images for int8 calibration: "
                        "folder:PATH or a TFDS name; preprocessed as evaluation does.")
    flags.DEFINE_string("calibration_split", None, "TFDS split of --calibration_data "
                        "(default train).")
    flags.DEFINE_integer("calibration_images", 300, "Calibration images (spread "
                         "over the split).", lower_bound=1)
    flags.DEFINE_string("data_dir", None, "TFDS data directory for --calibration_data.")
    flags.DEFINE_float("int8_tolerance", litert_export.TOLERANCE["int8"],
                       "The int8 models' check: their largest output difference "
                       "from TensorFlow per image, averaged over the check images, "
                       "as a fraction of the outputs' spread. Raise it only for a "
                       "model with untrained weights.")
    flags.DEFINE_integer("test_scale", DEFAULT_TEST_SCALE,
                         "Q: smallest image side for `serve_image_bytes`.")
    flags.DEFINE_bool("flip", False, "`serve_image_bytes` also averages over the "
                      "horizontally flipped image.")
    flags.DEFINE_integer("top_k", None, f"Classes in the top_k outputs (default "
                         f"{DEFAULT_TOP_K}, or all of a model with fewer).")
    flags.DEFINE_bool("check_onnx", True, "Check the ONNX model against TensorFlow.")
    flags.DEFINE_boolean(
        "trust_model_code", False, "Load .keras files even when they hold "
        "code that runs on loading (a Lambda layer); by default such "
        "files, which may come from strangers, are refused.")
    flags.DEFINE_integer(
        "max_pixels", DEFAULT_MAX_PIXELS, "`serve_image_bytes` refuses images "
        "whose header states more pixels, before decoding them (a 1.2 MB PNG can "
        "decode to 20000x20000); the default holds a 36 MP camera photo, about "
        "0.6 GB while decoded.", lower_bound=1)
    flags.DEFINE_integer("max_images", DEFAULT_MAX_IMAGES, "`serve_image_bytes` "
                         "refuses requests of more images.", lower_bound=1)
    flags.DEFINE_integer("max_aspect_ratio", DEFAULT_MAX_ASPECT_RATIO,
                         "`serve_image_bytes` refuses images whose longest side is "
                         "more than this times the shortest.", lower_bound=1)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    for required in ("model", "output", "name"):
        if not getattr(FLAGS, required):
            raise app.UsageError(f"--{required} is required.")
    logging.set_verbosity(logging.INFO)
    try:
        result = export(FLAGS.model, FLAGS.output, FLAGS.name, version=FLAGS.version,
                        formats=FLAGS.format, test_scale=FLAGS.test_scale,
                        flip=FLAGS.flip, top_k=FLAGS.top_k, check_onnx=FLAGS.check_onnx,
                        max_pixels=FLAGS.max_pixels, max_images=FLAGS.max_images,
                        max_aspect_ratio=FLAGS.max_aspect_ratio,
                        trust_model_code=FLAGS.trust_model_code,
                        deploy_options=deploy.Options(
                            FLAGS.litert_precisions, FLAGS.litert_dense, FLAGS.int8_io,
                            FLAGS.calibration_data, FLAGS.calibration_split,
                            FLAGS.calibration_images, FLAGS.data_dir,
                            FLAGS.int8_tolerance))
    except ValueError as e:   # bad arguments, a refused file, no calibration images
        sys.exit(f"error: {e}")
    print(result["path"])


def run():
    """The `keras-vgg-export` console command.

    `PROCESS_ENV` must be in the environment before TensorFlow loads; when
    it is not (the console command imports `keras_vgg`, hence TensorFlow,
    before this runs) the process restarts itself once with it set.
    """
    missing = {k: v for k, v in PROCESS_ENV.items() if os.environ.get(k) != v}
    if missing and "tensorflow" in sys.modules:
        os.environ.update(missing)
        os.execv(sys.executable, [sys.executable, "-m", __name__ if __name__ !=
                                  "__main__" else "keras_vgg.export.export_vgg",
                                  *sys.argv[1:]])
    os.environ.update(missing)
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
