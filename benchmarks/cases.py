"""Benchmark cases, each run by `run.py` in a fresh interpreter.

    python benchmarks/cases.py CASE PARAMS_JSON RESULT_PATH

A child process per implementation: Keras picks its backend once per process,
and each framework's thread pools, allocator and compilation caches stay out of
the others' figures. Nothing here imports TensorFlow at module level: the GPU
machines have JAX and PyTorch only (`BENCH_BLOCK_TENSORFLOW=1` makes TensorFlow
look uninstalled, which is how the tests check the GPU path on CPU).

Every case returns a JSON-serialisable dict, or a list of them, each with a
`status`: "ok", "error" (with `error`), "not_available" or "skipped" (with
`reason`). No figure is ever filled in for a case that did not run.
"""

import gc
import importlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


if os.environ.get("BENCH_BLOCK_TENSORFLOW") == "1":
    # What an uninstalled TensorFlow looks like: `import tensorflow` raises
    # ModuleNotFoundError and importlib.util.find_spec returns None.
    sys.modules["tensorflow"] = None

from benchmarks import flops  # noqa: E402  (after the import hook)

# ---------------------------------------------------------------------------
# Timing helpers


def summary(values):
    """Median, min, max and count of a list of numbers."""
    values = [float(v) for v in values]
    return {"median": statistics.median(values), "min": min(values),
            "max": max(values), "n": len(values)}


def time_blocks(step, warmup, repeats, steps_per_block=1, sync=None):
    """Seconds per step: `warmup` untimed steps, then `repeats` timed blocks.

    Each block is `steps_per_block` steps followed by `sync()` (a device
    synchronisation on GPUs; CPU frameworks here return finished results).
    Returns (first_step_seconds, [seconds per step of each block]).
    """
    sync = sync or (lambda: None)
    t = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t
    for _ in range(max(warmup - 1, 0)):
        step()
    sync()
    per_step = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps_per_block):
            step()
        sync()
        per_step.append((time.perf_counter() - t) / steps_per_block)
    return first, per_step


def rate_entry(batch_size, per_step, flops_per_image=None, peak_flops=None):
    """images/s (median/min/max over blocks) and, given a peak, utilisation."""
    return rate_summaries(batch_size, [batch_size / t for t in per_step],
                          flops_per_image, peak_flops)


def rate_summaries(batch_size, rates, flops_per_image=None, peak_flops=None):
    """Every figure of a throughput entry from its images/s samples (also how
    run.py pools the samples of several rounds)."""
    entry = {"status": "ok", "batch_size": batch_size,
             "images_per_s": summary(rates),
             "step_s": summary([batch_size / r for r in rates]),
             "samples_images_per_s": list(rates),
             "flops_per_image": flops_per_image, "peak_flops": peak_flops}
    if flops_per_image:
        achieved = [r * flops_per_image / 1e9 for r in rates]
        entry["achieved_gflops"] = summary(achieved)
        if peak_flops:
            entry["mfu"] = summary([a * 1e9 / peak_flops for a in achieved])
    return entry


def error_entry(exc, **extra):
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return {"status": "error", "error": text[-2000:], **extra}


def _free():
    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _set_threads(params):
    threads = params.get("threads")
    if threads and "torch" in sys.modules:
        import torch
        torch.set_num_threads(threads)


def _net_kwargs(params):
    return dict(widths=tuple(params["widths"]), fc_units=params["fc_units"])


def _flops_per_image(params, train=True):
    kw = dict(config="D", image_size=params["image_size"], **_net_kwargs(params),
              classes=params["classes"])
    return (flops.train_flops_per_image(**kw) if train
            else flops.forward_flops_per_image(**kw))


# ---------------------------------------------------------------------------
# Peak matmul throughput


def case_peak(params):
    """Best-of-N dense matmul throughput, the denominator of the utilisation.

    CPU: float32 with numpy (its BLAS) and torch (oneDNN/MKL) at a few sizes,
    the best single run of all. GPU: bf16 with torch (or JAX if torch has no
    GPU), n x n with n = matmul_size.
    """
    import numpy as np
    n, repeats = params["matmul_size"], params["matmul_repeats"]
    flop = 2.0 * n ** 3
    results = {}
    if params.get("device") == "gpu":
        try:
            import torch
            if not torch.cuda.is_available():
                raise RuntimeError("torch.cuda.is_available() is False")
            a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
            b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
            for _ in range(3):
                a @ b
            torch.cuda.synchronize()
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                for _ in range(10):
                    a @ b
                torch.cuda.synchronize()
                times.append((time.perf_counter() - t) / 10)
            results["torch_bf16"] = summary([flop / t / 1e9 for t in times])
        except Exception as e:  # noqa: BLE001
            results["torch_bf16"] = error_entry(e)
        if "median" not in results["torch_bf16"]:
            try:
                import jax
                import jax.numpy as jnp
                a = jnp.ones((n, n), jnp.bfloat16)
                f = jax.jit(lambda a: a @ a)
                f(a).block_until_ready()
                times = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    for _ in range(10):
                        out = f(a)
                    out.block_until_ready()
                    times.append((time.perf_counter() - t) / 10)
                results["jax_bf16"] = summary([flop / t / 1e9 for t in times])
            except Exception as e:  # noqa: BLE001
                results["jax_bf16"] = error_entry(e)
        dtype = "bfloat16"
    else:
        # Several sizes: small ones run from cache at the FMA units' rate,
        # large ones show what memory bandwidth leaves; the best counts.
        # numpy first, before torch's OpenMP pool exists (idle spinning
        # threads of one library slow the other's).
        def measure(lib, make):
            for size in sorted({min(512, n), min(1024, n), n}):
                flop = 2.0 * size ** 3
                a = np.random.default_rng(0).standard_normal((size, size),
                                                             dtype=np.float32)
                x, y = make(a), make(a.T.copy())
                x @ y
                times = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    x @ y
                    times.append(time.perf_counter() - t)
                results[f"{lib}_n{size}"] = summary([flop / t / 1e9 for t in times])

        measure("numpy_float32", lambda a: a)
        time.sleep(1.0)  # let OpenBLAS' threads stop spinning
        try:
            import torch
            _set_threads(params)
            measure("torch_float32", torch.from_numpy)
        except Exception as e:  # noqa: BLE001
            results["torch_float32"] = error_entry(e)
        dtype = "float32"
    best = max((v["max"] for v in results.values() if "max" in v), default=None)
    out = {"status": "ok" if best else "error", "dtype": dtype, "matmul_size": n,
           "by_library": results,
           "peak_gflops": best,  # best single run of the best library
           "note": "peak = best of N runs of an n x n matmul, 2 n^3 FLOPs"}
    if not best:
        out["error"] = "no matmul library ran"
    return out


# ---------------------------------------------------------------------------
# Keras models (keras_vgg and keras.applications)


def _keras_model(impl, params):
    import keras
    if params.get("precision") == "mixed_bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    data_format = params.get("data_format", "channels_last")
    keras.config.set_image_data_format(data_format)
    size = params["image_size"]
    shape = (size, size, 3) if data_format == "channels_last" else (3, size, size)
    if impl == "keras_vgg":
        import keras_vgg
        return keras_vgg.VGG16(weights=None, input_shape=shape,
                               classes=params["classes"], **_net_kwargs(params))
    if impl == "keras_applications":
        # keras.applications builds the full-width network only.
        return keras.applications.VGG16(weights=None, input_shape=shape,
                                        classes=params["classes"])
    raise ValueError(f"unknown Keras implementation {impl!r}")


def _keras_info(model, params):
    import keras
    info = {"backend": keras.backend.backend(), "keras": keras.__version__,
            "precision": keras.mixed_precision.global_policy().name,
            "data_format": keras.config.image_data_format(),
            "params": int(model.count_params()),
            "tensorflow_imported": sys.modules.get("tensorflow") is not None}
    return info


def _batch(params, batch_size, channels_first=False, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    size = params["image_size"]
    shape = (batch_size, 3, size, size) if channels_first else (batch_size, size, size, 3)
    x = rng.standard_normal(shape, dtype=np.float32)
    y = rng.integers(0, params["classes"], size=(batch_size,)).astype("int32")
    return x, y


def _keras_sync():
    """train_on_batch returns NumPy losses, which already waits for the step."""


def case_train_keras(params):
    """Training step of a Keras VGG-16: `model.train_on_batch` in a loop.

    `train_on_batch` is the compiled train step `fit` runs, minus `fit`'s data
    iteration and callbacks; it returns NumPy values, so every step is complete
    when it returns. Synthetic data already converted to backend tensors (on the
    GPU when there is one), SGD with momentum 0.9, sparse categorical
    cross-entropy, the model's default softmax head and dropout.
    """
    import keras
    import numpy as np
    _set_threads(params)
    if keras.backend.backend() == "torch" and params.get("device") == "gpu":
        import torch
        _cuda_defaults(torch)  # the same cuDNN settings as the PyTorch side
    impl = params["impl"]
    model = _keras_model(impl, params)
    jit = params.get("jit_compile", "auto")
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-3, momentum=0.9),
                  loss="sparse_categorical_crossentropy", jit_compile=jit)
    info = _keras_info(model, params)
    info["jit_compile_requested"] = jit
    info["jit_compile"] = bool(model.jit_compile)
    info["api"] = "model.train_on_batch"
    fpi = _flops_per_image(params)
    entries = []
    for bs in params["batch_sizes"]:
        try:
            x, y = _batch(params, bs, info["data_format"] == "channels_first")
            x, y = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
            first, per_step = time_blocks(
                lambda: model.train_on_batch(x, y), params["warmup"],
                params["repeats"], params.get("steps_per_block", 1))
            loss = float(np.asarray(model.train_on_batch(x, y)))
            entry = rate_entry(bs, per_step, fpi, params.get("peak_flops"))
            entry.update(first_step_s=first, final_loss=loss)
        except Exception as e:  # noqa: BLE001  (OOM at a large batch, ...)
            entry = error_entry(e, batch_size=bs)
        entries.append(entry)
        _free()
    return {"status": "ok", **info, "flops_per_image": fpi, "results": entries}


def case_infer_keras(params):
    """Inference: `model.predict` throughput and `predict_on_batch` latency."""
    import numpy as np
    _set_threads(params)
    model = _keras_model(params["impl"], params)
    info = _keras_info(model, params)
    info["api"] = "model.predict / predict_on_batch (batch 1)"
    fpi = _flops_per_image(params, train=False)
    cf = info["data_format"] == "channels_first"
    entries = []
    for bs in params["infer_batch_sizes"]:
        try:
            x, _ = _batch(params, bs * params["infer_batches"], cf)
            first, per_call = time_blocks(
                lambda: model.predict(x, batch_size=bs, verbose=0),
                params["warmup"], params["repeats"])
            per_step = [t / params["infer_batches"] for t in per_call]
            entry = rate_entry(bs, per_step, fpi, params.get("peak_flops"))
            entry.update(api="model.predict", first_call_s=first,
                         latency_ms=summary([t * 1e3 for t in per_step]))
        except Exception as e:  # noqa: BLE001
            entry = error_entry(e, batch_size=bs, api="model.predict")
        entries.append(entry)
    try:
        x1, _ = _batch(params, 1, cf)
        first, per_call = time_blocks(lambda: np.asarray(model.predict_on_batch(x1)),
                                      params["warmup"], params["latency_repeats"])
        latency = {"status": "ok", "api": "model.predict_on_batch", "batch_size": 1,
                   "latency_ms": summary([t * 1e3 for t in per_call]),
                   "samples_ms": [t * 1e3 for t in per_call],
                   "first_call_s": first}
    except Exception as e:  # noqa: BLE001
        latency = error_entry(e, api="model.predict_on_batch", batch_size=1)
    return {"status": "ok", **info, "throughput": entries, "latency": latency}


# ---------------------------------------------------------------------------
# PyTorch (torchvision's VGG-16)


def _torch_setup(params):
    import torch
    _set_threads(params)
    from benchmarks import torch_vgg
    device = "cuda" if params.get("device") == "gpu" else "cpu"
    if device == "cuda":
        _cuda_defaults(torch)
    torch.manual_seed(0)
    model = torch_vgg.vgg16(num_classes=params["classes"], **_net_kwargs(params)).to(device)
    memory_format = (torch.channels_last if params.get("channels_last")
                     else torch.contiguous_format)
    model = model.to(memory_format=memory_format)
    info = {"torch": torch.__version__, "device": device,
            "channels_last": bool(params.get("channels_last")),
            "amp": params.get("amp"), "compile": bool(params.get("compile")),
            "threads": torch.get_num_threads(),
            "params": sum(p.numel() for p in model.parameters())}
    return torch, model, device, memory_format, info


def _cuda_defaults(torch):
    """What torchvision's reference training scripts set on a GPU."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def _torch_sync(torch, device):
    return torch.cuda.synchronize if device == "cuda" else None


def case_train_torch(params):
    """Training step of torchvision's VGG-16: eager or `torch.compile`d model,
    SGD momentum 0.9, `nn.CrossEntropyLoss`; optional bf16 autocast (AMP) and
    channels_last. The loss is read back (`.item()`) only at block ends."""
    torch, model, device, memory_format, info = _torch_setup(params)
    model.train()
    fpi = _flops_per_image(params)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    amp = params.get("amp")
    net = model
    if params.get("compile"):
        try:
            # Static shapes: one compilation per batch size, each specialised
            # (the default would recompile the second size as dynamic).
            net = torch.compile(model, **{"dynamic": False,
                                          **params.get("compile_kwargs", {})})
        except Exception as e:  # noqa: BLE001
            return {**error_entry(e), **info}
    info["api"] = ("torch.compile(model)" if params.get("compile") else "eager") + \
        (f" + autocast({amp})" if amp else "")
    sync = _torch_sync(torch, device)
    entries = []
    batch_sizes = params["batch_sizes"]
    if params.get("compile") and params.get("compile_batch_sizes"):
        batch_sizes = params["compile_batch_sizes"]  # --quick: compiling is minutes
    for bs in batch_sizes:
        try:
            x, y = _batch(params, bs, channels_first=True)
            x = torch.from_numpy(x).to(device).contiguous(memory_format=memory_format)
            y = torch.from_numpy(y).long().to(device)
            last = {}

            def step():
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device_type=device, dtype=torch.bfloat16,
                                    enabled=amp == "bfloat16"):
                    loss = loss_fn(net(x), y)
                loss.backward()
                opt.step()
                last["loss"] = loss

            first, per_step = time_blocks(step, params["warmup"], params["repeats"],
                                          params.get("steps_per_block", 1), sync)
            entry = rate_entry(bs, per_step, fpi, params.get("peak_flops"))
            entry.update(first_step_s=first, final_loss=float(last["loss"].item()))
        except Exception as e:  # noqa: BLE001
            entry = error_entry(e, batch_size=bs)
            if params.get("compile") and not entries:
                # A compile failure fails every batch size the same way.
                return {"status": "error", "error": entry["error"], **info,
                        "results": [entry]}
        entries.append(entry)
        _free()
    return {"status": "ok", **info, "flops_per_image": fpi, "results": entries}


def case_infer_torch(params):
    """Inference of torchvision's VGG-16 in eager mode under `inference_mode`."""
    torch, model, device, memory_format, info = _torch_setup(params)
    model.eval()
    fpi = _flops_per_image(params, train=False)
    sync = _torch_sync(torch, device)
    info["api"] = "eager, torch.inference_mode()"

    def timed(bs, repeats):
        x, _ = _batch(params, bs, channels_first=True)
        x = torch.from_numpy(x).to(device).contiguous(memory_format=memory_format)

        def call():
            with torch.inference_mode():
                model(x)
        return time_blocks(call, params["warmup"], repeats, 1, sync)

    entries = []
    for bs in params["infer_batch_sizes"]:
        try:
            first, per_step = timed(bs, params["repeats"])
            entry = rate_entry(bs, per_step, fpi, params.get("peak_flops"))
            entry.update(api=info["api"], first_call_s=first,
                         latency_ms=summary([t * 1e3 for t in per_step]))
        except Exception as e:  # noqa: BLE001
            entry = error_entry(e, batch_size=bs)
        entries.append(entry)
    try:
        first, per_call = timed(1, params["latency_repeats"])
        latency = {"status": "ok", "api": info["api"], "batch_size": 1,
                   "latency_ms": summary([t * 1e3 for t in per_call]),
                   "samples_ms": [t * 1e3 for t in per_call],
                   "first_call_s": first}
    except Exception as e:  # noqa: BLE001
        latency = error_entry(e, batch_size=1)
    return {"status": "ok", **info, "throughput": entries, "latency": latency}


# ---------------------------------------------------------------------------
# Exports (export/, written separately): looked up lazily, never faked.

EXPORT_CANDIDATES = {
    # kind: [(module, function), ...]; the first that exists is used, called as
    # fn(keras_vgg.fully_convolutional(model), path): export/export_vgg.py's
    # conversions take the dense (FC-as-conv) model, as its `export()` does.
    "saved_model": [("keras_vgg.export.export_vgg", "export_saved_model")],
    "onnx": [("keras_vgg.export.export_vgg", "export_onnx")],
}


def find_callable(candidates):
    """The first `module.function` of `candidates` that imports, else (None, why)."""
    tried = []
    for module, name in candidates:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):
                tried.append(f"{module} (no module)")
                continue
            return None, f"{module} failed to import: {e}"
        except Exception as e:  # noqa: BLE001
            return None, f"{module} failed to import: {type(e).__name__}: {e}"
        fn = getattr(mod, name, None)
        if callable(fn):
            return fn, f"{module}.{name}"
        tried.append(f"{module}.{name} (missing)")
    return None, "not available yet: tried " + ", ".join(tried)


class PeakRSS:
    """Peak resident set size of this process while the block runs (polled)."""

    def __init__(self, interval=0.01):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    @staticmethod
    def rss():
        try:
            import psutil
            return psutil.Process().memory_info().rss
        except ImportError:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self):
        self.before = self.peak = self.rss()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def _du(path):
    if os.path.isfile(path):  # ONNX weights live beside it, in path + ".data"
        return sum(os.path.getsize(p) for p in (path, path + ".data")
                   if os.path.isfile(p))
    return sum(os.path.getsize(os.path.join(d, f))
               for d, _, files in os.walk(path) for f in files)


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
    _set_threads(params)
    out_dir = params["export_dir"]
    model = keras_vgg.VGG16(weights=None, input_shape=(params["image_size"],) * 2 + (3,),
                            classes=params["classes"], **_net_kwargs(params))
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
                             "size_mb": _du(path) / 2**20}
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
    fpi = _flops_per_image(params, train=False)
    entries = []
    for bs in params["infer_batch_sizes"]:
        try:
            x, _ = _batch(params, bs)
            first, per_step = time_blocks(lambda: materialise(call(x)),
                                          params["warmup"], params["repeats"])
            entry = rate_entry(bs, per_step, fpi, params.get("peak_flops"))
            entry.update(first_call_s=first,
                         latency_ms=summary([t * 1e3 for t in per_step]))
        except Exception as e:  # noqa: BLE001
            entry = error_entry(e, batch_size=bs)
        entries.append(entry)
    try:
        x1, _ = _batch(params, 1)
        first, per_call = time_blocks(lambda: materialise(call(x1)), params["warmup"],
                                      params["latency_repeats"])
        latency = {"status": "ok", "batch_size": 1, "first_call_s": first,
                   "latency_ms": summary([t * 1e3 for t in per_call]),
                   "samples_ms": [t * 1e3 for t in per_call]}
    except Exception as e:  # noqa: BLE001
        latency = error_entry(e, batch_size=1)
    return {"status": "ok", **info, "throughput": entries, "latency": latency}


# ---------------------------------------------------------------------------
# The training input pipeline (recipes/data.py, written separately)

def make_jpegs(directory, count, seed=0):
    """Real encoded JPEGs of ImageNet-like size (500x375 and 375x500, quality
    90), cut and resized from the two photos scikit-learn ships."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images
    os.makedirs(directory, exist_ok=True)
    photos = [Image.fromarray(p) for p in load_sample_images().images]  # 427x640
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        cw, ch = int(rng.integers(w // 2, w)), int(rng.integers(h // 2, h))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        size = (500, 375) if i % 4 else (375, 500)
        img = photo.crop((left, top, left + cw, top + ch)).resize(size, Image.BILINEAR)
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        path = os.path.join(directory, f"img_{i:04d}.jpg")
        img.save(path, quality=90)
        paths.append(path)
    return paths


def _limit_threads(ds, threads):
    import tensorflow as tf
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options)


def _time_dataset(ds, images, warmup_batches, repeats):
    """images/s of iterating `ds` (batches of images, or (images, labels))."""
    import tensorflow as tf

    def count(batch):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if isinstance(x, dict):
            x = next(iter(x.values()))
        return int(tf.shape(x)[0]) if len(x.shape) == 4 else 1

    rates = []
    it = iter(ds.repeat())
    for _ in range(warmup_batches):
        next(it)
    for _ in range(repeats):
        n, t = 0, time.perf_counter()
        while n < images:
            n += count(next(it))
        rates.append(n / (time.perf_counter() - t))
    return summary(rates)


def _recipes_pipeline(examples, size, params):
    """recipes.data.train_pipeline over an in-memory Split, or (None, why)."""
    try:
        data = importlib.import_module("keras_vgg.recipes.data")
    except ModuleNotFoundError as e:
        return None, f"not available yet: {e}"
    missing = [n for n in ("train_pipeline", "Split", "IMAGENET_MEAN_RGB")
               if not hasattr(data, n)]
    if missing:
        return None, f"not available yet: recipes.data has no {', '.join(missing)}"
    return (lambda: recipes_train_dataset(data, examples, size, params["pipeline_batch_size"],
                                          params["crop_size"]),
            "recipes.data.train_pipeline (scale=(256, 512), colour shift)")


def recipes_train_dataset(data, examples, size, batch_size, crop_size):
    """One epoch of `data.train_pipeline` (a `recipes.data` module, of this
    tree or of another revision) at the paper's S in [256, 512]."""
    return data.train_pipeline(
        data.Split("train", examples, size), global_batch=batch_size,
        image_size=crop_size, scale=(256, 512), mean_rgb=data.IMAGENET_MEAN_RGB,
        seed=0, initial_epoch=0, epochs=1, steps_per_epoch=size // batch_size)


def case_pipeline(params):
    """images/s of the training input pipeline with its tf.data parallelism
    limited to 1 thread and to all cores, on real ~500x375 JPEGs held in memory
    as encoded bytes (decode, scale jitter, crop, flip, colour shift, mean;
    reading files is storage-bound and left out).

    `recipes.data`'s pipeline when it exists; `benchmarks.reference_pipeline`
    (the same steps in plain tf.image, written here as a yardstick, not the
    package's code) always, labelled as such.
    """
    import tensorflow as tf
    from benchmarks import reference_pipeline
    tmp = params.get("jpeg_dir") or tempfile.mkdtemp(prefix="vgg_bench_jpegs_")
    files = make_jpegs(tmp, params["jpeg_count"])
    encoded = []
    for f in files:
        with open(f, "rb") as fh:
            encoded.append(fh.read())
    labels = [i % params["classes"] for i in range(len(files))]
    examples = tf.data.Dataset.from_tensor_slices(
        (tf.constant(encoded), tf.constant(labels, tf.int64))).cache()
    cores = params["threads"]
    bs = params["pipeline_batch_size"]
    out = {"status": "ok", "tensorflow": tf.__version__, "images": len(files),
           "jpeg_bytes_mean": sum(map(len, encoded)) / len(encoded),
           "jpeg_size": "500x375 / 375x500, quality 90", "batch_size": bs,
           "cores_available": cores, "crop_size": params["crop_size"]}

    builders = {}
    build, where = _recipes_pipeline(examples, len(files), params)
    if build is None:
        out["recipes"] = {"status": "not_available", "reason": where}
    else:
        builders["recipes"] = (build, where)
    builders["reference"] = (
        lambda: reference_pipeline.train_dataset(examples, batch_size=bs,
                                                 crop_size=params["crop_size"]),
        "benchmarks.reference_pipeline.train_dataset (yardstick, not the package's)")

    for key, (build, where) in builders.items():
        entry = {"status": "ok", "function": where, "by_threads": {}}
        try:
            for threads in sorted({1, cores}):
                ds = _limit_threads(build(), threads)
                entry["by_threads"][str(threads)] = _time_dataset(
                    ds, params["pipeline_images"], params["pipeline_warmup_batches"],
                    params["repeats"])
            one = entry["by_threads"]["1"]["median"]
            entry["images_per_s_per_core"] = one
            entry["images_per_s_all_cores"] = entry["by_threads"][str(cores)]["median"]
            entry["scaling_efficiency"] = entry["images_per_s_all_cores"] / (one * cores)
        except Exception as e:  # noqa: BLE001
            entry = {**error_entry(e), "function": where}
        out[key] = entry
    shutil.rmtree(tmp, ignore_errors=True) if not params.get("jpeg_dir") else None
    return out


# ---------------------------------------------------------------------------

CASES = {name[5:]: fn for name, fn in globals().items()
         if name.startswith("case_") and callable(fn)}


def main(argv):
    case, params_json, result_path = argv[1:4]
    params = json.loads(params_json)
    t = time.perf_counter()
    try:
        result = CASES[case](params)
    except Exception as e:  # noqa: BLE001
        result = error_entry(e)
        result["traceback"] = traceback.format_exc()[-4000:]
    if isinstance(result, dict):
        result.setdefault("case_wall_s", time.perf_counter() - t)
        result.setdefault("tensorflow_imported", sys.modules.get("tensorflow") is not None)
    with open(result_path, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(sys.argv)
