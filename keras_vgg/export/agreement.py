"""How far a converted model's outputs are from TensorFlow's: one measure
for every converted format (LiteRT, ONNX int8)."""

import numpy as np
from absl import logging


def compare(expected, got, name, tolerance, per_image_mean=False):
    """`max_abs_diff`, `relative` and `top1_agreement` of `got` against
    `expected`.

    `relative` is a difference over the spread (max - min) of TensorFlow's
    outputs on the check images: the largest difference (`per_image_mean`
    false: float formats, where every output must match), or the mean over
    images of each image's largest difference (int8 formats: quantization
    noise can move one ambiguous image's probabilities a long way, so one
    image must not fail an export, while a wrong model, a channel order or a
    missing layer, is off on most images).

    Raises:
        AssertionError: `relative` exceeds `tolerance` (NaN included).
    """
    expected, got = np.asarray(expected, np.float32), np.asarray(got, np.float32)
    per_image = np.abs(got - expected).reshape(len(expected), -1).max(1)
    diff = float(per_image.max())
    spread = float(expected.max() - expected.min()) or 1.0
    measured = float(per_image.mean()) if per_image_mean else diff
    result = {"max_abs_diff": diff, "mean_image_max_abs_diff": float(per_image.mean()),
              "relative": measured / spread,
              "relative_to": "mean over images" if per_image_mean else "max",
              "top1_agreement": float(np.mean(got.argmax(1) == expected.argmax(1))),
              "images": int(len(expected)), "tolerance": tolerance}
    logging.info("%s vs TensorFlow on %d images: max abs difference %.3g, per image "
                 "%.3g on average (%.2g of the outputs' spread), top-1 agreement %.3f",
                 name, len(expected), diff, result["mean_image_max_abs_diff"],
                 result["relative"], result["top1_agreement"])
    if not result["relative"] <= tolerance:
        what = "on average per image" if per_image_mean else "at most"
        raise AssertionError(f"{name} differs from TensorFlow by {measured:.3g} {what}, "
                             f"{result['relative']:.3g} of the outputs' spread "
                             f"(allowed {tolerance}).")
    return result
