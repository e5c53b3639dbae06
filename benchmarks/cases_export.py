"""Benchmark cases of the exported artifacts: export time and peak memory
(`case_export`), and inference through the SavedModel and ONNX Runtime.
Run by `cases.py` in a fresh interpreter, like every case.
"""

import os
import time

from benchmarks.measure import (
    PeakRSS, batch, du, error_entry, find_callable, flops_per_image, net_kwargs,
    rate_entry, set_threads, summary, time_blocks)

# ---------------------------------------------------------------------------
# Exports (export/, written separately): looked up lazily, never faked.

EXPORT_CANDIDATES = {
    # kind: [(module, function), ...]; the first that exists is used, called as
    # fn(keras_vgg.fully_convolutional(model), path): export/export_vgg.py's
    # conversions take the dense (FC-as-conv) model, as its `export()` does.
    "saved_model": [("keras_vgg.export.serving", "export_saved_model")],
    "onnx": [("keras_vgg.export.onnx_export", "export_onnx")],
}


def case_export(params):
    """Export time and peak memory of VGG-16 through export/ (SavedModel, ONNX).

    Each format's conversion is looked up in export/ (EXPORT_CANDIDATES); a
    missing one is recorded as not available. Peak memory is this process's
    resident set, polled every 10 ms during the conversion (TensorFlow and the
    model already loaded count in `peak_rss_mb`, not in the increase). The
    written paths go to the inference cases. (`export/benchmark_export.py`
    measures the full `export()`, ONNX check included, per depth.)
    """
    import keras_vgg
    set_threads(params)
    out_dir = params["export_dir"]
    model = keras_vgg.VGG16(weights=None, input_shape=(params["image_size"],) * 2 + (3,),
                            classes=params["classes"], **net_kwargs(params))
    dense = keras_vgg.fully_convolutional(model)
    results = {}
    for kind in params.get("formats", ("saved_model", "onnx")):
        fn, where = find_callable(EXPORT_CANDIDATES[kind])
        if fn is None:
            results[kind] = {"status": "not_available", "reason": where}
            continue
        path = os.path.join(out_dir, kind + (".onnx" if kind == "onnx" else ""))
        try:
            t = time.perf_counter()
            with PeakRSS() as mem:
                written = fn(dense, path)
            seconds = time.perf_counter() - t
            path = written if isinstance(written, (str, os.PathLike)) and \
                os.path.exists(written) else path
            results[kind] = {"status": "ok", "function": where, "path": str(path),
                             "export_s": seconds,
                             "peak_rss_mb": mem.peak / 2**20,
                             "peak_rss_increase_mb": (mem.peak - mem.before) / 2**20,
                             "size_mb": du(path) / 2**20}
        except Exception as e:  # noqa: BLE001
            results[kind] = {**error_entry(e), "function": where}
    return {"status": "ok", "results": results}


def case_infer_saved_model(params):
    """Inference of the exported SavedModel through `tf.saved_model.load`."""
    import numpy as np
    import tensorflow as tf
    path = params["path"]
    loaded = tf.saved_model.load(path)
    sig = loaded.signatures.get("serving_default")
    if sig is not None:
        name = next(iter(sig.structured_input_signature[1]))
        spec = sig.structured_input_signature[1][name]

        def call(x):
            return sig(**{name: tf.constant(x, dtype=spec.dtype)})
    else:
        call = loaded.serve
    return _infer_callable(params, call, {"api": "tf.saved_model.load(...).signatures"
                                          "['serving_default']", "path": path},
                           lambda out: [np.asarray(v) for v in
                                        (out.values() if isinstance(out, dict) else [out])])


def case_infer_onnx(params):
    """Inference of the exported ONNX model with ONNX Runtime (CPU EP)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    if params.get("threads"):
        opts.intra_op_num_threads = params["threads"]
    sess = ort.InferenceSession(params["path"], opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return _infer_callable(params, lambda x: sess.run(None, {name: x}),
                           {"api": "onnxruntime.InferenceSession.run",
                            "onnxruntime": ort.__version__, "path": params["path"]},
                           lambda out: out)


def _infer_callable(params, call, info, materialise):
    fpi = flops_per_image(params, train=False)
    entries = []
    for bs in params["infer_batch_sizes"]:
        try:
            x, _ = batch(params, bs)
            first, per_step = time_blocks(lambda: materialise(call(x)),
                                          params["warmup"], params["repeats"])
            entry = rate_entry(bs, per_step, fpi, params.get("peak_flops"))
            entry.update(first_call_s=first,
                         latency_ms=summary([t * 1e3 for t in per_step]))
        except Exception as e:  # noqa: BLE001
            entry = error_entry(e, batch_size=bs)
        entries.append(entry)
    try:
        x1, _ = batch(params, 1)
        first, per_call = time_blocks(lambda: materialise(call(x1)), params["warmup"],
                                      params["latency_repeats"])
        latency = {"status": "ok", "batch_size": 1, "first_call_s": first,
                   "latency_ms": summary([t * 1e3 for t in per_call]),
                   "samples_ms": [t * 1e3 for t in per_call]}
    except Exception as e:  # noqa: BLE001
        latency = error_entry(e, batch_size=1)
    return {"status": "ok", **info, "throughput": entries, "latency": latency}
