"""LiteRT (TensorFlow Lite) export of a VGG: float32, float16 weights,
dynamic-range int8 and full-integer int8, each checked against TensorFlow
with the LiteRT interpreter (`ai-edge-litert`).

The network converted is the fully-convolutional form the other formats
export; at a fixed `image_size x image_size` input (default) its output is
the classifier's own, and with `dense=True` the input is `[1, None, None, 3]`
and the runtime resizes it (`Interpreter.resize_tensor_input`) to any image
of at least that size. The model takes preprocessed images (as
`serving_default`) and returns the class probabilities.
"""

import numpy as np

from keras_vgg.export.choices import parse_choices

PRECISIONS = ("float32", "float16", "dynamic_int8", "int8")
FILES = {"float32": "model_fp32.tflite", "float16": "model_fp16.tflite",
         "dynamic_int8": "model_dynamic_int8.tflite", "int8": "model_int8.tflite"}
# Largest difference from TensorFlow allowed, relative to the spread (max -
# min) of TensorFlow's outputs on the check images, per precision. float32
# differs by summation order only; float16 weights lose 11 bits of mantissa;
# the int8 precisions get a bound on the average image's largest difference
# that a wrong model (a channel order, a missing layer) exceeds while
# quantization noise does not (measured on the trained smoke model: 0.003
# LiteRT, 0.008-0.016 ONNX Runtime); their top-1 agreement is reported.
TOLERANCE = {"float32": 1e-4, "float16": 2e-2, "dynamic_int8": 0.1, "int8": 0.1}
INT8 = ("dynamic_int8", "int8")


def parse_precisions(precisions):
    return parse_choices(precisions, PRECISIONS, "LiteRT precision")


def convert(dense, precision, image_size, calibration=None, int8_io=False, dense_input=False):
    """The `.tflite` flatbuffer of `dense` at `precision`.

    Args:
        dense: a model made by `keras_vgg.fully_convolutional` (or a transfer
            classifier that takes any size).
        precision: one of `PRECISIONS`.
        image_size: the fixed input side (and the calibration images' side).
        calibration: `(N, image_size, image_size, 3)` preprocessed images,
            needed for `int8`.
        int8_io: with `int8`, int8 inputs and outputs too (for integer-only
            accelerators; the caller quantizes with the input's scale).
        dense_input: an input of any size (`[1, None, None, 3]`).
    """
    import tensorflow as tf

    size = None if dense_input else image_size
    spec = tf.TensorSpec([1, size, size, 3], tf.float32, name="images")
    serve = tf.function(lambda images: dense(images, training=False), input_signature=[spec])
    # A module owning the weights once (as the SavedModel export does), for
    # the converter to freeze them from.
    module = tf.Module()
    module.vgg_weights = [v.value for v in dense.weights]
    module.serve = serve
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], module)
    if precision == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision == "int8":
        if calibration is None or not len(calibration):
            raise ValueError("Full-integer int8 needs calibration images "
                             "(--calibration_data).")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter.convert()


def invoke(interpreter, x):
    """One call of an allocated `interpreter` on the float32 batch `x`
    (int8 inputs and outputs quantized and dequantized here)."""
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    if inp["dtype"] == np.int8:
        scale, zero = inp["quantization"]
        x = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    y = interpreter.get_tensor(out["index"])
    if out["dtype"] == np.int8:
        scale, zero = out["quantization"]
        y = (y.astype(np.float32) - zero) * scale
    return y


def run(flatbuffer, images, threads=None):
    """The interpreter's outputs for `images` `(N, H, W, 3)`, one at a time."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
    inp = interpreter.get_input_details()[0]
    if tuple(inp["shape"][1:3]) != images.shape[1:3]:
        interpreter.resize_tensor_input(inp["index"], [1, *images.shape[1:]])
    interpreter.allocate_tensors()
    return np.stack([invoke(interpreter, x[None])[0] for x in images])


def check(flatbuffer, dense, images, precision, tolerance=None):
    """LiteRT against TensorFlow on `images` (`agreement.compare`), within
    `tolerance` (default the precision's `TOLERANCE`)."""
    from keras_vgg.export.agreement import compare

    expected = dense(images, training=False)
    return compare(expected, run(flatbuffer, images), f"LiteRT {precision}",
                   TOLERANCE[precision] if tolerance is None else tolerance,
                   per_image_mean=precision in INT8)
