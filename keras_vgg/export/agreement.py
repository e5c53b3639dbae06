"""How far a converted model's outputs are from TensorFlow's: one measure
for every converted format (LiteRT, ONNX int8)."""

import numpy as np
from absl import logging


def compare(expected, got, name, tolerance):
    """`max_abs_diff`, `relative` (to the spread, max - min, of TensorFlow's
    outputs) and `top1_agreement` of `got` against `expected`.

    Raises:
        AssertionError: `relative` exceeds `tolerance` (NaN included).
    """
    expected, got = np.asarray(expected, np.float32), np.asarray(got, np.float32)
    diff = float(np.abs(got - expected).max())
    spread = float(expected.max() - expected.min()) or 1.0
    result = {"max_abs_diff": diff, "relative": diff / spread,
              "top1_agreement": float(np.mean(got.argmax(1) == expected.argmax(1))),
              "images": int(len(expected)), "tolerance": tolerance}
    logging.info("%s vs TensorFlow on %d images: max abs difference %.3g (%.2g of "
                 "the outputs' spread), top-1 agreement %.3f", name, len(expected),
                 diff, result["relative"], result["top1_agreement"])
    if not result["relative"] <= tolerance:
        raise AssertionError(f"{name} differs from TensorFlow by {diff:.3g}, "
                             f"{result['relative']:.3g} of the outputs' spread "
                             f"(allowed {tolerance}).")
    return result
