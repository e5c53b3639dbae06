"""Static int8 quantization (QDQ) of the exported ONNX model with ONNX
Runtime, calibrated on real images, and its check against TensorFlow.

`model_int8.onnx` holds QuantizeLinear/DequantizeLinear pairs around the
convolutions' int8 weights (per output channel) and activations (per
tensor, ranges from the calibration images by MinMax), which ONNX Runtime runs with int8 kernels on
CPUs, TensorRT and OpenVINO with theirs. About a quarter of the float32
file, inline (no external data).
"""

import os

import numpy as np
from absl import logging

ONNX_INT8_FILE = "model_int8.onnx"


def quantize(fp32_path, int8_path, calibration):
    """Writes `int8_path`, the QDQ int8 form of the ONNX model at `fp32_path`,
    its activation ranges measured on `calibration` (preprocessed images)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    if calibration is None or not len(calibration):
        raise ValueError("ONNX int8 needs calibration images (--calibration_data).")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.images = iter(calibration)

        def get_next(self):
            x = next(self.images, None)
            return None if x is None else {"images": x[None]}

    logging.info("ONNX int8: calibrating on %d images", len(calibration))
    # The convolutions (FC layers included, as dense evaluation makes them
    # convolutions) and the poolings between them: where the time goes. The
    # tail (softmax over the class map, its average, top-k) stays float32:
    # probabilities of about 1/classes quantized per tensor leave ONNX
    # Runtime's averaging "out of computation range".
    quantize_static(fp32_path, int8_path, Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    per_channel=True, op_types_to_quantize=["Conv", "MaxPool"])
    return os.path.getsize(int8_path)


def check(dense, int8_path, images, tolerance=None):
    """ONNX Runtime's int8 model against TensorFlow on `images`
    (`agreement.compare`, per image on average; the tolerance is LiteRT
    int8's)."""
    import onnxruntime as ort

    from keras_vgg.export.agreement import compare

    session = ort.InferenceSession(int8_path, providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(["probabilities"], {"images": x[None]})[0]
                          for x in images])
    from keras_vgg.export.litert_export import TOLERANCE
    return compare(dense(images, training=False), got, "ONNX int8",
                   TOLERANCE["int8"] if tolerance is None else tolerance,
                   per_image_mean=True)
