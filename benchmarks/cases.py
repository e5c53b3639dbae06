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

import json
import os
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


if os.environ.get("BENCH_BLOCK_TENSORFLOW") == "1":
    # What an uninstalled TensorFlow looks like: `import tensorflow` raises
    # ModuleNotFoundError and importlib.util.find_spec returns None.
    sys.modules["tensorflow"] = None

from benchmarks.measure import (  # noqa: E402  (after the import hook)
    batch, error_entry, flops_per_image, free, net_kwargs, rate_entry,
    set_threads, summary, time_blocks)


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
            set_threads(params)
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
                               classes=params["classes"], **net_kwargs(params))
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
    set_threads(params)
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
    fpi = flops_per_image(params)
    entries = []
    for bs in params["batch_sizes"]:
        try:
            x, y = batch(params, bs, info["data_format"] == "channels_first")
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
        free()
    return {"status": "ok", **info, "flops_per_image": fpi, "results": entries}


def case_infer_keras(params):
    """Inference: `model.predict` throughput and `predict_on_batch` latency."""
    import numpy as np
    set_threads(params)
    model = _keras_model(params["impl"], params)
    info = _keras_info(model, params)
    info["api"] = "model.predict / predict_on_batch (batch 1)"
    fpi = flops_per_image(params, train=False)
    cf = info["data_format"] == "channels_first"
    entries = []
    for bs in params["infer_batch_sizes"]:
        try:
            x, _ = batch(params, bs * params["infer_batches"], cf)
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
        x1, _ = batch(params, 1, cf)
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
    set_threads(params)
    from benchmarks import torch_vgg
    device = "cuda" if params.get("device") == "gpu" else "cpu"
    if device == "cuda":
        _cuda_defaults(torch)
    torch.manual_seed(0)
    model = torch_vgg.vgg16(num_classes=params["classes"], **net_kwargs(params)).to(device)
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
    fpi = flops_per_image(params)
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
            x, y = batch(params, bs, channels_first=True)
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
        free()
    return {"status": "ok", **info, "flops_per_image": fpi, "results": entries}


def case_infer_torch(params):
    """Inference of torchvision's VGG-16 in eager mode under `inference_mode`."""
    torch, model, device, memory_format, info = _torch_setup(params)
    model.eval()
    fpi = flops_per_image(params, train=False)
    sync = _torch_sync(torch, device)
    info["api"] = "eager, torch.inference_mode()"

    def timed(bs, repeats):
        x, _ = batch(params, bs, channels_first=True)
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

from benchmarks import cases_export, cases_pipeline  # noqa: E402

CASES = {name[5:]: fn for module in (sys.modules[__name__], cases_export, cases_pipeline)
         for name, fn in vars(module).items()
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
