"""ONNX export of a fully-convolutional VGG through tf2onnx, in bounded memory.

tf2onnx is handed a graph without its weights (they are graph inputs), and
the weights go back in afterwards as external data; see the README,
"Converting in bounded memory".
"""

import os

from absl import logging
import numpy as np

from keras_vgg.export.serving import DEFAULT_TOP_K, heads

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

def fold_batch_norm(model):
    """The same network with each BatchNormalization folded into the
    convolution before it, for inference: `gamma * (conv(x) + b - mean) /
    sqrt(var + eps) + beta` is a convolution with kernel `k * s` and bias
    `(b - mean) * s + beta`, `s = gamma / sqrt(var + eps)`.

    The ONNX graph is traced with the weights as inputs, so tf2onnx cannot
    fold BatchNorm itself: it would stay a Mul and an Add in NHWC after each
    Conv (in NCHW), with a Transpose on either side, and static int8 would
    quantize the convolution's output before BatchNorm rescales it. Models
    without BatchNorm (or not a chain of layers) come back unchanged.
    """
    import keras

    from keras_vgg.chain import chain_layers

    try:
        layers = chain_layers(model)
    except ValueError:
        return model
    if not any(isinstance(layer, keras.layers.BatchNormalization) for layer in layers):
        return model
    x = inputs = keras.Input(shape=tuple(model.inputs[0].shape[1:]))
    i = 0
    while i < len(layers):
        conv, bn = layers[i], layers[i + 1] if i + 1 < len(layers) else None
        channel_axis = -1 if getattr(conv, "data_format", None) == "channels_last" else 1
        if not (isinstance(conv, keras.layers.Conv2D)
                and isinstance(bn, keras.layers.BatchNormalization)
                and bn.axis in (channel_axis, channel_axis % 4)):
            x = conv(x)
            i += 1
            continue
        folded = keras.layers.Conv2D.from_config({**conv.get_config(), "use_bias": True})
        x = folded(x)
        scale = np.asarray(bn.moving_variance) + bn.epsilon
        scale = (np.asarray(bn.gamma) if bn.scale else 1.0) / np.sqrt(scale)
        bias = np.asarray(conv.bias) if conv.use_bias else 0.0
        folded.set_weights([
            (np.asarray(conv.kernel) * scale).astype("float32"),   # HWIO: out is last
            ((bias - np.asarray(bn.moving_mean)) * scale +
             (np.asarray(bn.beta) if bn.center else 0.0)).astype("float32")])
        i += 2
    return keras.Model(inputs, x, name=model.name)


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
        return heads(probabilities, top_k, None)

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

    serve, signature, arrays, names = _onnx_function(fold_batch_norm(dense), top_k)
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
        AssertionError: the difference exceeds `tolerance` (no separate
            top-class check: within the tolerance, only a class whose margin
            over the next is below twice the tolerance can change).
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
