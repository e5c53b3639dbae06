"""The deployment formats of an export: `onnx_int8` (ONNX Runtime static
quantization) and `litert` (float32, float16, dynamic-range int8 and
full-integer int8 `.tflite` files), written into the export's staging
folder, each checked against TensorFlow, with their sizes.

Both int8 paths are calibrated on the same real images (`calibration`),
preprocessed as evaluation does; the checks run on those images too (or,
without calibration data, on inputs of the preprocessed range).
"""

import os

import numpy as np
from absl import logging

from keras_vgg.export import litert_export, onnx_quantize
from keras_vgg.export.calibration import CalibrationError, calibration_images
from keras_vgg.export.onnx_export import ONNX_FILE, export_onnx

DEPLOY_FORMATS = ("onnx_int8", "litert")
CHECK_IMAGES = 32   # of the calibration images, for the checks


class Options:
    """What the deployment formats take from the command line or `export()`.

    Attributes:
        litert_precisions: a subset of `litert_export.PRECISIONS`.
        litert_dense: the `.tflite` models take any size the runtime resizes
            them to (else the model's fixed input size).
        int8_io: full-integer LiteRT with int8 inputs and outputs.
        calibration_data: `folder:PATH` or a TFDS name; needed for int8.
        calibration_split: TFDS split (default `train`).
        calibration_images: how many.
        data_dir: TFDS' data directory.
        int8_tolerance: how far the int8 and dynamic-int8 models may be from
            TensorFlow, on average per image, as a fraction of the outputs'
            spread (`agreement.compare`); default `litert_export.TOLERANCE`'s.
            An untrained model (random weights) has no meaningful agreement:
            raise it there.
    """

    def __init__(self, litert_precisions=litert_export.PRECISIONS, litert_dense=False,
                 int8_io=False, calibration_data=None, calibration_split=None,
                 calibration_images=300, data_dir=None, int8_tolerance=None):
        self.litert_precisions = litert_export.parse_precisions(litert_precisions)
        self.litert_dense, self.int8_io = litert_dense, int8_io
        self.calibration_data, self.calibration_split = calibration_data, calibration_split
        self.calibration_images, self.data_dir = calibration_images, data_dir
        self.int8_tolerance = litert_export.TOLERANCE["int8"] \
            if int8_tolerance is None else float(int8_tolerance)
        if not self.int8_tolerance > 0:
            raise ValueError("`int8_tolerance` must be positive. "
                             f"Received: int8_tolerance={int8_tolerance!r}")
        if not isinstance(calibration_images, int) or calibration_images < 1:
            raise ValueError("`calibration_images` must be a positive integer. "
                             f"Received: calibration_images={calibration_images!r}")

    def needs_calibration(self, formats):
        return "onnx_int8" in formats or ("litert" in formats and
                                          "int8" in self.litert_precisions)


def check_options(formats, options):
    """Fails before any conversion when int8 is asked for without images."""
    if options.needs_calibration(formats) and not options.calibration_data:
        asked = [f for f in formats if f == "onnx_int8"] + \
            (["litert int8"] if "litert" in formats and "int8" in options.litert_precisions
             else [])
        raise CalibrationError(
            f"{' and '.join(asked)} need calibration images: pass "
            "--calibration_data=folder:/path/to/images or a TFDS name (with "
            "--calibration_split), or leave int8 out (e.g. "
            "--litert_precisions=float32,float16,dynamic_int8).")


def write(dense, staging, formats, options, *, image_size, test_scale, mean_rgb, top_k,
          log_stage):
    """Writes the deployment formats of `formats` into `staging`.

    Returns:
        `{file name: {"bytes": size, "check": {...}}}`.
    """
    formats = [f for f in DEPLOY_FORMATS if f in formats]
    if not formats:
        return {}
    if options.needs_calibration(formats):
        log_stage(f"calibration images ({options.calibration_images})")
        images = calibration_images(
            options.calibration_data, image_size=image_size, smallest_side=test_scale,
            mean_rgb=mean_rgb, count=options.calibration_images,
            split=options.calibration_split, data_dir=options.data_dir)
        logging.info("%d calibration images from %s", len(images), options.calibration_data)
    else:
        images = None
    checks = images[:CHECK_IMAGES] if images is not None else \
        np.random.default_rng(0).uniform(-125, 150, (4, image_size, image_size, 3)) \
        .astype(np.float32)
    artifacts = {}
    if "onnx_int8" in formats:
        log_stage("ONNX int8")
        fp32 = os.path.join(staging, ONNX_FILE)
        made_fp32 = not os.path.exists(fp32)
        if made_fp32:   # quantization starts from the float32 file
            export_onnx(dense, fp32, top_k=top_k)
        path = os.path.join(staging, onnx_quantize.ONNX_INT8_FILE)
        size = onnx_quantize.quantize(fp32, path, images)
        artifacts[onnx_quantize.ONNX_INT8_FILE] = {
            "bytes": size, "check": onnx_quantize.check(
                dense, path, checks, options.int8_tolerance)}
        if made_fp32:
            for name in (ONNX_FILE, ONNX_FILE + ".data"):
                os.remove(os.path.join(staging, name))
    if "litert" in formats:
        for precision in options.litert_precisions:
            log_stage(f"LiteRT {precision}")
            flatbuffer = litert_export.convert(
                dense, precision, image_size, calibration=images,
                int8_io=options.int8_io, dense_input=options.litert_dense)
            name = litert_export.FILES[precision]
            with open(os.path.join(staging, name), "wb") as f:
                f.write(flatbuffer)
            artifacts[name] = {"bytes": len(flatbuffer), "check": litert_export.check(
                flatbuffer, dense, checks, precision,
                options.int8_tolerance if precision in litert_export.INT8 else None)}
            del flatbuffer
    for name, artifact in artifacts.items():
        logging.info("%s: %.1f MB, top-1 agreement with TensorFlow %.3f", name,
                     artifact["bytes"] / 1e6, artifact["check"]["top1_agreement"])
    return artifacts
