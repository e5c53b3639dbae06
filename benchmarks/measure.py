"""Timing and bookkeeping shared by the benchmark cases (`cases.py`,
`cases_export.py`, `cases_pipeline.py`): robust summaries of repeated
timings, rate entries with model FLOP utilisation, error entries, peak
memory, sizes on disk. Nothing here imports a framework at module level.
"""

import gc
import importlib
import os
import statistics
import sys
import threading
import time
import traceback

from benchmarks import flops


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


def free():
    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def set_threads(params):
    threads = params.get("threads")
    if threads and "torch" in sys.modules:
        import torch
        torch.set_num_threads(threads)


def net_kwargs(params):
    return dict(widths=tuple(params["widths"]), fc_units=params["fc_units"])


def flops_per_image(params, train=True):
    kw = dict(config="D", image_size=params["image_size"], **net_kwargs(params),
              classes=params["classes"])
    return (flops.train_flops_per_image(**kw) if train
            else flops.forward_flops_per_image(**kw))


def batch(params, batch_size, channels_first=False, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    size = params["image_size"]
    shape = (batch_size, 3, size, size) if channels_first else (batch_size, size, size, 3)
    x = rng.standard_normal(shape, dtype=np.float32)
    y = rng.integers(0, params["classes"], size=(batch_size,)).astype("int32")
    return x, y


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


def du(path):
    if os.path.isfile(path):  # ONNX weights live beside it, in path + ".data"
        return sum(os.path.getsize(p) for p in (path, path + ".data")
                   if os.path.isfile(p))
    return sum(os.path.getsize(os.path.join(d, f))
               for d, _, files in os.walk(path) for f in files)
