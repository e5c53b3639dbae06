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
"""

import gc
import os
import shutil
import sys
import tempfile
import time

from absl import app, flags, logging
import numpy as np

# TensorFlow, Keras and the ONNX packages are imported inside the functions:
# the command line must set PROCESS_ENV before TensorFlow loads, and
# benchmark_export.py reads it without loading TensorFlow.

FORMATS = ("saved_model", "onnx")
DEFAULT_TEST_SCALE = 256
DEFAULT_TOP_K = 5
# Opset 17: the newest that tf2onnx 1.17 fully supports and that
# onnxruntime >= 1.14, TensorRT >= 8.6 and OpenVINO >= 2023 all run; VGG
# needs nothing newer than opset 11 (Conv, MaxPool, Softmax, TopK).
ONNX_OPSET = 17
ONNX_FILE = "model.onnx"
# ONNX tolerance against TensorFlow on probabilities (float32, softmax).
ONNX_TOLERANCE = 1e-4
# Pixel size of the check image for ONNX: non-square and larger than 224, so
# dense evaluation (score map larger than 1x1) is exercised.
ONNX_CHECK_SIZE = (256, 320)
# Set by the command line before TensorFlow loads. oneDNN's allocator (TF's
# default on x86) keeps every freed buffer for reuse, so the temporaries of
# loading a model (random initialisation of fc1 alone: 3 x 0.4 GiB) stay in
# RSS for the rest of the export; the system allocator gives them back.
# Measured on VGG-11 loading: RSS after load 1.96 -> 1.18 GiB.
PROCESS_ENV = {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1"}
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def export(model, output, name, version=None, formats=FORMATS,
           test_scale=DEFAULT_TEST_SCALE, flip=False, top_k=DEFAULT_TOP_K,
           check_onnx=True):
    """Exports a VGG classifier as a TF Serving SavedModel and/or ONNX.

    Args:
        model: path to a `.keras` file of a VGG with its classifier
            (`include_top=True`), or such a `keras.Model`.
        output: base directory; the export goes to `output/name/version/`.
        name: model name (TF Serving's `MODEL_NAME`), a plain directory name.
        version: positive integer; defaults to one more than the largest
            existing version (1 if none). An existing version is never
            overwritten.
        formats: any of `"saved_model"`, `"onnx"` (a list, or a string with
            comma-separated values).
        test_scale: Q, the smallest side images given as bytes are rescaled
            to (paper, section 3.2); at least the model's input size.
        flip: also classify the horizontally flipped image given as bytes and
            average the two (paper, section 3.2).
        top_k: number of classes in `top_k_*` outputs (at most `classes`).
        check_onnx: check the ONNX file with `onnx.checker` and compare it with
            TensorFlow under onnxruntime (raises if the difference exceeds
            `ONNX_TOLERANCE`).

    Returns:
        A dict: `path` (the version directory), `version`, `formats`, and for
        ONNX `onnx_max_abs_diff` (None when `check_onnx=False`).

    Raises:
        ValueError: the model is not an exportable VGG, or an argument is out
            of range.
        FileExistsError: `version` already exists.
    """
    formats = _parse_formats(formats)
    if not name or os.sep in name or name.startswith(".") or name != name.strip():
        raise ValueError(f"`name` must be a plain directory name. Received: name={name!r}")
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"`top_k` must be a positive integer. Received: top_k={top_k!r}")
    if isinstance(version, str) and version.isdigit():
        version = int(version)
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)
                                or version < 1):
        raise ValueError(f"`version` must be a positive integer. Received: version={version!r}")
    started = time.monotonic()
    dense, info = _dense_model(model)
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
    result = {"path": final, "version": version, "formats": formats}
    try:
        if "saved_model" in formats:
            _log_stage("SavedModel", started)
            export_saved_model(dense, staging, test_scale=test_scale, flip=flip,
                               top_k=top_k)
        if "onnx" in formats:
            _log_stage("ONNX", started)
            onnx_path = os.path.join(staging, ONNX_FILE)
            export_onnx(dense, onnx_path, top_k=top_k)
            result["onnx_max_abs_diff"] = None
            if check_onnx:
                _log_stage("ONNX check", started)
                result["onnx_max_abs_diff"] = check_onnx_model(dense, onnx_path)
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


def _log_stage(stage, started):
    logging.info("[%6.1f s] %s ...", time.monotonic() - started, stage)


def _parse_formats(formats):
    if isinstance(formats, str):
        formats = formats.split(",")
    formats = [f.strip() for f in formats if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"Unknown export format(s) {unknown or formats}. "
                         f"Allowed: {', '.join(FORMATS)} (comma-separated).")
    return [f for f in FORMATS if f in formats]


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


def _dense_model(model):
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
        try:
            model = keras.saving.load_model(path, compile=False)
        except Exception as e:
            raise ValueError(f"Could not load {path!r} as a Keras model: {e}") from e
    try:
        dense = keras_vgg.fully_convolutional(model)
    except ValueError as e:
        raise ValueError(f"{source} is not a VGG classifier that can be exported "
                         f"(a keras_vgg or keras.applications VGG with its top): {e}") from e
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


# --------------------------------------------------------------------------
# The serving graph, shared by the SavedModel and ONNX exports.


def _labels(classes):
    """The class names for `top_k_labels`, if the model has ImageNet's classes."""
    import keras_vgg

    if classes != 1000:
        return None
    return [name for _, name in keras_vgg.imagenet_classes()]


def _heads(probabilities, top_k, labels):
    import tensorflow as tf

    scores, classes = tf.math.top_k(probabilities, k=top_k)
    outputs = {"probabilities": probabilities, "top_k_classes": classes,
               "top_k_scores": scores}
    if labels is not None:
        outputs["top_k_labels"] = tf.gather(tf.constant(labels), classes)
    return outputs


def _check_size(images, min_size):
    """Fails with InvalidArgument when `images` are smaller than `min_size`."""
    import tensorflow as tf

    shape = tf.shape(images)
    ok = tf.logical_and(shape[1] >= min_size[0], shape[2] >= min_size[1])
    # Inside the graph the model's own MinimumInputSize check cannot see the
    # (dynamic) size; without this a small image fails deep in fc1's conv.
    return tf.debugging.Assert(ok, [
        f"Images must be at least {min_size[0]}x{min_size[1]} (height x width) "
        "for this model. Received height, width:", shape[1], shape[2]])


def _decode(data):
    """Decodes one JPEG or PNG string into float32 RGB pixels, checking it.

    The pixels come from `keras_vgg.recipes.data.decode`, the decoder evaluation uses.
    """
    import tensorflow as tf

    from keras_vgg.recipes.data import decode

    is_jpeg = tf.equal(tf.strings.substr(data, 0, len(_JPEG_MAGIC)), _JPEG_MAGIC)
    is_png = tf.equal(tf.strings.substr(data, 0, len(_PNG_MAGIC)), _PNG_MAGIC)
    check = tf.debugging.Assert(tf.logical_or(is_jpeg, is_png), [
        "serve_image_bytes expects JPEG or PNG encoded images (the raw file "
        "bytes; base64 only in the JSON of TF Serving's REST API). Received a "
        "string that is neither, of length:", tf.strings.length(data)])
    with tf.control_dependencies([check]):
        return decode(data)


def _saved_model_module(dense, test_scale, flip, top_k):
    """A `tf.Module` with the two serving signatures and the weights, once each."""
    import tensorflow as tf

    import keras_vgg
    # The paper's test-time rescale, the same function evaluate.py uses, so a
    # served image is seen exactly as in evaluation.
    from keras_vgg.recipes.data import rescale

    classes = int(dense.output.shape[-1])
    min_size = dense.get_layer("min_input_size").min_size
    labels = _labels(classes)

    def net(images):
        with tf.control_dependencies([_check_size(images, min_size)]):
            return dense(images, training=False)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32,
                                                name="images")])
    def serve_tensor(images):
        return _heads(net(images), top_k, labels)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_bytes(image_bytes):
        def one(data):
            image = rescale(_decode(data), test_scale)
            x = keras_vgg.preprocess_input(image[None], data_format="channels_last")
            if flip:  # both in one batch: same size, one pass
                x = tf.concat([x, tf.reverse(x, axis=[2])], axis=0)
            return tf.reduce_mean(net(x), axis=0)

        # Images differ in size, so each one goes through the network alone.
        probabilities = tf.map_fn(one, image_bytes, fn_output_signature=tf.TensorSpec(
            [classes], tf.float32))
        return _heads(probabilities, top_k, labels)

    module = tf.Module()
    # Track the plain tf.Variables, not the Keras model: Keras 3 wraps each
    # tf.Variable in a keras Variable that is itself trackable, and
    # `model.export` tracks both (`variables` and `_all_variables`), so every
    # weight is written twice. Here each weight has one checkpoint entry.
    module.vgg_weights = [v.value for v in dense.weights]
    module.serving_default = serve_tensor
    module.serve_image_bytes = serve_bytes
    return module, {"serving_default": serve_tensor.get_concrete_function(),
                    "serve_image_bytes": serve_bytes.get_concrete_function()}


def export_saved_model(dense, path, test_scale=DEFAULT_TEST_SCALE, flip=False,
                       top_k=DEFAULT_TOP_K):
    """Writes the SavedModel of a fully-convolutional VGG to `path` (non-atomic).

    Use `export` for the versioned, atomic layout; this is the conversion
    itself, for a model made by `keras_vgg.fully_convolutional`.
    """
    import tensorflow as tf

    module, signatures = _saved_model_module(dense, test_scale, flip, top_k)
    tf.saved_model.save(module, path, signatures=signatures)


# --------------------------------------------------------------------------
# ONNX


def _onnx_function(dense, top_k):
    """The serving graph with the weights as inputs, plus those weights.

    tf2onnx is handed a graph without a single weight in it: every float
    variable becomes a graph input. So TensorFlow has nothing to freeze and
    tf2onnx's optimizer passes, which copy constant tensors, only see a graph
    of a few kilobytes. The weights go back in afterwards as initializers.
    """
    import tensorflow as tf

    def is_input(v):
        return v.dtype in ("float16", "bfloat16", "float32", "float64")

    trainable = list(dense.trainable_variables)
    non_trainable = list(dense.non_trainable_variables)
    weights = [v for v in trainable + non_trainable if is_input(v)]
    # Other state (the dropout layers' seeds) is unused at inference; it stays
    # a small constant.
    fixed = {id(v): v.numpy() for v in non_trainable if not is_input(v)}
    specs = [tf.TensorSpec(v.shape, v.dtype, name=f"weight_{i}")
             for i, v in enumerate(weights)]
    signature = [tf.TensorSpec([None, None, None, 3], tf.float32, name="images")] + specs
    n_trainable = sum(is_input(v) for v in trainable)

    @tf.function(input_signature=signature, autograph=False)
    def serve(images, *values):
        values = list(values)
        trainable_values = values[:n_trainable]
        non_trainable_values, rest = [], values[n_trainable:]
        for v in non_trainable:
            non_trainable_values.append(rest.pop(0) if is_input(v) else fixed[id(v)])
        probabilities, _ = dense.stateless_call(
            trainable_values, non_trainable_values, images, training=False)
        return _heads(probabilities, top_k, None)

    arrays = {spec.name: v.numpy() for spec, v in zip(specs, weights)}
    names = {spec.name: v.path for spec, v in zip(specs, weights)}
    return serve, signature, arrays, names


def export_onnx(dense, path, opset=ONNX_OPSET, top_k=DEFAULT_TOP_K):
    """Converts a fully-convolutional VGG to ONNX through tf2onnx.

    Writes `path` (graph) and `path + ".data"` (weights, ONNX external data,
    so any size is fine). Input `images` `[batch, height, width, 3]`, all
    three dynamic; outputs `probabilities`, `top_k_classes`, `top_k_scores`.

    Args:
        dense: a model made by `keras_vgg.fully_convolutional`.
        path: where to write the `.onnx` file.
        opset: ONNX opset.
        top_k: number of classes in the `top_k_*` outputs.
    """
    import onnx
    import tf2onnx

    serve, signature, arrays, names = _onnx_function(dense, top_k)
    logging.info("tf2onnx: converting the graph (weights held out: %.0f MiB)",
                 sum(a.nbytes for a in arrays.values()) / 2**20)
    model, _ = tf2onnx.convert.from_function(serve, input_signature=signature,
                                             opset=opset)
    graph = model.graph
    held_out = [i for i in graph.input if i.name in arrays]
    if len(held_out) != len(arrays):
        raise RuntimeError(
            f"tf2onnx dropped weight inputs {sorted(set(arrays) - {i.name for i in held_out})}; "
            "cannot attach the weights.")
    for graph_input in held_out:
        graph.input.remove(graph_input)
    logging.info("Attaching %d weight tensors as initializers", len(arrays))
    arrays = _fold_weight_ops(graph, arrays)
    for name, array in list(arrays.items()):
        # Readable initializer names ("block1_conv1/kernel") where unambiguous.
        if name in names:
            _rename(graph, name, names[name])
            arrays[names[name]] = arrays.pop(name)
    _name_dynamic_dims(graph)
    _write_with_external_data(model, arrays, path)
    onnx.checker.check_model(path, full_check=True)


# ONNX ops that tf2onnx puts between a weight input and its Conv when the
# weight is not a constant (kernel HWIO -> OIHW, bias reshapes); they are
# folded into the initializers here, so the runtime graph is as lean as the
# one tf2onnx would have made from constants.
def _fold(node, inputs):
    import onnx

    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    x = inputs[0]
    if node.op_type == "Transpose":
        return np.ascontiguousarray(np.transpose(x, attrs.get("perm")))
    if node.op_type == "Reshape":
        shape = [d if d != 0 else x.shape[i] for i, d in enumerate(inputs[1].tolist())]
        return x.reshape(shape)
    if node.op_type in ("Squeeze", "Unsqueeze"):
        axes = attrs.get("axes", inputs[1].tolist() if len(inputs) > 1 else None)
        if node.op_type == "Squeeze":
            return np.squeeze(x, axis=None if axes is None else tuple(axes))
        for axis in sorted(a % (x.ndim + len(axes)) for a in axes):
            x = np.expand_dims(x, axis)
        return x
    if node.op_type == "Identity":
        return x
    return None


def _fold_weight_ops(graph, arrays):
    """Folds Transpose/Reshape/Squeeze nodes applied to held-out weights."""
    from onnx import numpy_helper

    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in list(graph.node):
        if not node.input or node.input[0] not in arrays or len(node.output) != 1:
            continue
        if not all(i in arrays or i in constants for i in node.input[1:] if i):
            continue
        value = _fold(node, [arrays.get(i, constants.get(i)) for i in node.input if i])
        if value is None:
            continue
        source = node.input[0]
        graph.node.remove(node)
        consumers = [n for n in graph.node if source in n.input]
        if consumers:  # the weight is also used as it is: keep both
            arrays[node.output[0]] = value
        else:  # the usual case: the folded tensor replaces the weight
            del arrays[source]
            arrays[source] = value
            _rename(graph, node.output[0], source)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for tensor in list(graph.initializer):
        if tensor.name not in used:
            graph.initializer.remove(tensor)
    return {k: v for k, v in arrays.items() if k in used}


def _rename(graph, old, new):
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
    for output in graph.output:
        if output.name == old:
            output.name = new


def _name_dynamic_dims(graph):
    """Names the dynamic dimensions `batch`, `height`, `width` (tf2onnx: `unk__N`)."""
    for graph_input in graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        for dim, name in zip(dims, ("batch", "height", "width")):
            dim.dim_param = name
    for output in graph.output:
        dims = output.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "batch"


def _write_with_external_data(model, arrays, path):
    """Writes `model` with `arrays` as external-data initializers.

    Each array is written straight to `path + ".data"`; the protobuf only holds
    offsets. `onnx.save(..., save_as_external_data=True)` would first copy
    every weight into the protobuf and then out again.
    """
    import onnx
    from onnx import helper

    location = os.path.basename(path) + ".data"
    offset = 0
    with open(path + ".data", "wb") as data:
        for name, array in arrays.items():
            array = np.ascontiguousarray(array)
            tensor = onnx.TensorProto(
                name=name, dims=array.shape,
                data_type=helper.np_dtype_to_tensor_dtype(array.dtype),
                data_location=onnx.TensorProto.EXTERNAL)
            for key, value in (("location", location), ("offset", str(offset)),
                               ("length", str(array.nbytes))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            data.write(memoryview(array).cast("B"))  # no copy, unlike tobytes()
            offset += array.nbytes
            # Keep offsets 4 KiB-aligned so runtimes can mmap the weights.
            padding = -offset % 4096
            data.write(b"\0" * padding)
            offset += padding
            model.graph.initializer.append(tensor)
    model.producer_name = "keras-vgg export (tf2onnx)"
    onnx.save(model, path)


def check_onnx_model(dense, path, size=ONNX_CHECK_SIZE, tolerance=ONNX_TOLERANCE):
    """Compares the ONNX model with TensorFlow on a non-square input.

    Returns:
        The max absolute difference of the probabilities.

    Raises:
        AssertionError: the difference exceeds `tolerance`, or the top class
            differs.
    """
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    # Preprocessed-pixel range (mean-centred [0, 255]).
    x = rng.uniform(-125, 150, (2, size[0], size[1], 3)).astype("float32")
    expected = np.asarray(dense(x, training=False))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"images": x})[0]
    diff = float(np.abs(got - expected).max())
    logging.info("ONNX vs TensorFlow on %dx%d images: max abs difference %.2e",
                 size[0], size[1], diff)
    if not diff <= tolerance:  # also catches NaN
        raise AssertionError(f"ONNX model {path} differs from TensorFlow by "
                             f"{diff:.3g} (allowed {tolerance:g}).")
    return diff


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
    flags.DEFINE_list("format", list(FORMATS), f"Formats to write: {', '.join(FORMATS)}.")
    flags.DEFINE_integer("test_scale", DEFAULT_TEST_SCALE,
                         "Q: smallest image side for `serve_image_bytes`.")
    flags.DEFINE_bool("flip", False, "`serve_image_bytes` also averages over the "
                      "horizontally flipped image.")
    flags.DEFINE_integer("top_k", DEFAULT_TOP_K, "Classes in the top_k outputs.")
    flags.DEFINE_bool("check_onnx", True, "Check the ONNX model against TensorFlow.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    for required in ("model", "output", "name"):
        if not getattr(FLAGS, required):
            raise app.UsageError(f"--{required} is required.")
    logging.set_verbosity(logging.INFO)
    result = export(FLAGS.model, FLAGS.output, FLAGS.name, version=FLAGS.version,
                    formats=FLAGS.format, test_scale=FLAGS.test_scale,
                    flip=FLAGS.flip, top_k=FLAGS.top_k, check_onnx=FLAGS.check_onnx)
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
