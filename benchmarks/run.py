"""Side-by-side benchmarks of keras-vgg (issue 5).

    python benchmarks/run.py            # full CPU run (the lead's, on a quiet machine)
    python benchmarks/run.py --quick    # 5-10 minutes on 2 cores: batches 2 and 4
    python benchmarks/run.py --tiny     # narrow 32x32 nets, ~3 min (torch.compile most of it)
    KERAS_BACKEND=jax python benchmarks/run.py --gpu   # H100/H200, no TensorFlow

Writes `benchmarks/results/<machine>[-quick|-tiny].json`, a Markdown table
beside it (`.md`), the throughput plot (`_throughput.png`), and prints the
table. Every implementation runs in its own child process (`cases.py`),
sequentially, with the same thread settings; each figure is the median, min
and max over repeated timed blocks after warm-up.
"""

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import report  # noqa: E402  (matplotlib imported lazily there)
from benchmarks.flops import GPU_SPEC_BF16_TFLOPS  # noqa: E402

SCHEMA = 1
TINY_NET = dict(image_size=32, widths=[4, 8, 8, 16, 16], fc_units=32, classes=10)
FULL_NET = dict(image_size=224, widths=[64, 128, 256, 512, 512], fc_units=4096,
                classes=1000)

MODES = {
    "tiny": dict(**TINY_NET, batch_sizes=[2, 4], infer_batch_sizes=[4], infer_batches=2,
                 warmup=1, repeats=3, latency_repeats=3, matmul_size=256,
                 matmul_repeats=3, jpeg_count=8, pipeline_images=8,
                 pipeline_batch_size=4, pipeline_warmup_batches=1, crop_size=224,
                 job_timeout=300),
    "quick": dict(**FULL_NET, batch_sizes=[2, 4], infer_batch_sizes=[8], infer_batches=1,
                  warmup=1, repeats=3, latency_repeats=5, matmul_size=2048,
                  matmul_repeats=5, jpeg_count=32, pipeline_images=64,
                  pipeline_batch_size=16, pipeline_warmup_batches=2, crop_size=224,
                  compile_batch_sizes=[4], job_timeout=900),
    "full": dict(**FULL_NET, batch_sizes=[8, 16, 32, 64], infer_batch_sizes=[32],
                 infer_batches=2, warmup=2, repeats=5, latency_repeats=20,
                 matmul_size=4096, matmul_repeats=5, jpeg_count=128,
                 pipeline_images=256, pipeline_batch_size=32,
                 pipeline_warmup_batches=2, crop_size=224, job_timeout=3600,
                 extra_jobs=True, rounds=2),
}
# On a GPU: bigger batches, blocks of steps between synchronisations, and a
# warm-up long enough for XLA / torch.compile / autotuning.
GPU_OVERRIDES = {
    "tiny": dict(steps_per_block=2),
    "quick": dict(batch_sizes=[64, 128], compile_batch_sizes=[128], warmup=5,
                  repeats=3, steps_per_block=5, matmul_size=8192),
    # One round: the device tool allows 10 minutes per command; split a run
    # with --backends / --skip (results merge by job name).
    "full": dict(batch_sizes=[64, 128, 256], warmup=10, repeats=5, steps_per_block=10,
                 matmul_size=8192, matmul_repeats=10, rounds=1, job_timeout=580),
}

# Suggested order of evaluation: the names a user would pick between.
CPU_TRAIN = [
    ("keras_vgg", "train_keras", dict(impl="keras_vgg"), {"KERAS_BACKEND": "tensorflow"}),
    ("keras_applications", "train_keras", dict(impl="keras_applications"),
     {"KERAS_BACKEND": "tensorflow"}),
    ("torch_eager", "train_torch", dict(), {}),
    ("torch_compile", "train_torch", dict(compile=True), {}),
]
# Full runs only: what the defaults leave on the table (XLA on the CPU, the
# package on the PyTorch backend, PyTorch with channels_last/oneDNN layouts).
CPU_TRAIN_EXTRA = [
    ("keras_vgg_xla", "train_keras", dict(impl="keras_vgg", jit_compile=True),
     {"KERAS_BACKEND": "tensorflow"}),
    ("keras_vgg_torch_backend", "train_keras", dict(impl="keras_vgg"),
     {"KERAS_BACKEND": "torch"}),
    ("torch_eager_channels_last", "train_torch", dict(channels_last=True), {}),
]
CPU_INFER = [
    ("keras_vgg", "infer_keras", dict(impl="keras_vgg"), {"KERAS_BACKEND": "tensorflow"}),
    ("keras_applications", "infer_keras", dict(impl="keras_applications"),
     {"KERAS_BACKEND": "tensorflow"}),
    ("torch_eager", "infer_torch", dict(), {}),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="VGG-16 at 224, batches 2 and 4: 5-10 minutes on 2 cores")
    size.add_argument("--tiny", action="store_true",
                      help="narrow 32x32 networks (~3 min, torch.compile most of it): for the tests")
    p.add_argument("--gpu", action="store_true",
                   help="the GPU part (item 4): keras_vgg on the JAX/PyTorch backends "
                        "in mixed_bfloat16 vs torchvision-style AMP; imports no "
                        "TensorFlow. Without a GPU it runs on CPU (a dry run).")
    p.add_argument("--backends", default=None,
                   help="Keras backends for --gpu, comma-separated (default: "
                        "each of jax, torch that is installed)")
    p.add_argument("--only", default=None,
                   help="comma-separated parts: peak,train,infer,export,pipeline")
    p.add_argument("--skip", default="", help="comma-separated job names to skip, "
                   "e.g. torch_compile")
    p.add_argument("--batch-sizes", default=None, help="training batch sizes, e.g. 8,16,32")
    p.add_argument("--rounds", type=int, default=None,
                   help="run the training and inference jobs this many times, "
                        "interleaved, and pool the samples (default 2 for a full "
                        "run, else 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for every framework (default: the usable cores)")
    p.add_argument("--machine", default=None, help="name of the results file")
    p.add_argument("--out", default=os.path.join(HERE, "results"),
                   help="results directory (default: benchmarks/results)")
    p.add_argument("--job-timeout", type=int, default=None, help="seconds per child")
    p.add_argument("--no-plot", action="store_true")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------
# The machine


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def gpu_names():
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def machine_info(threads):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        cpu = platform.processor() or "unknown"
    mem_gib = None
    try:
        with open("/proc/meminfo") as f:
            mem_gib = int(f.readline().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu,
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "memory_gib": mem_gib,
        "gpus": gpu_names(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {d: _version(d) for d in (
            "keras", "tensorflow", "torch", "jax", "jaxlib", "numpy", "onnxruntime",
            "tf2onnx", "onnx", "keras-vgg")},
        "threads": threads,
        "thread_env": {k: v for k, v in thread_env(threads).items()},
        "load_average_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def machine_slug(info, gpu):
    if gpu and info["gpus"]:
        name = info["gpus"][0].split(",")[0]
        return "gpu-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    cpu = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*", "", info["cpu"].lower())
    cpu = re.sub(r"[^a-z0-9]+", "-", cpu).strip("-")
    return f"cpu-{cpu}-{info['cores_usable']}c"


def thread_env(threads):
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "OPENBLAS_NUM_THREADS": str(threads), "TF_NUM_INTRAOP_THREADS": str(threads)}


def spec_bf16_tflops(gpu_line):
    for key in sorted(GPU_SPEC_BF16_TFLOPS, key=len, reverse=True):
        words = key.split()
        if all(w.lower() in gpu_line.lower() for w in words):
            if key == "H100" and "pcie" in gpu_line.lower():
                continue
            return key, GPU_SPEC_BF16_TFLOPS[key]
    return None, None


# ---------------------------------------------------------------------------
# Child processes


def run_job(case, params, env_extra, timeout, log):
    """Runs `cases.py CASE` in a fresh interpreter; returns its result dict."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = f.name
    env = dict(os.environ, **thread_env(params["threads"]), TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(
                   [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                             if p]))
    env.update(env_extra)
    cmd = [sys.executable, os.path.join(HERE, "cases.py"), case, json.dumps(params),
           result_path]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
        with open(result_path) as f:
            result = json.load(f)
        if proc.returncode:
            result.setdefault("stderr_tail", proc.stderr[-2000:])
    except subprocess.TimeoutExpired:
        result = {"status": "error", "error": f"timed out after {timeout} s"}
    except (OSError, ValueError) as e:
        stderr = locals().get("proc").stderr[-3000:] if "proc" in locals() else ""
        result = {"status": "error", "error": f"child failed: {e}",
                  "stderr_tail": stderr}
    finally:
        if os.path.exists(result_path):
            os.unlink(result_path)
    wall = time.perf_counter() - t
    result["job_wall_s"] = wall
    result["run_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds")
    result["env"] = {k: v for k, v in env_extra.items()}
    log(f"  {case} {json.dumps({k: v for k, v in params.items() if k in ('impl', 'compile', 'amp', 'precision', 'jit_compile', 'data_format', 'channels_last', 'path', 'formats')})}"
        f" {env_extra or ''}: {result.get('status')} in {wall:.0f} s"
        + (f" ({result.get('error', '')[:200]})" if result.get("status") == "error" else ""))
    return result


def plan(args):
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    params = dict(MODES[mode])
    threads = args.threads or (len(os.sched_getaffinity(0))
                               if hasattr(os, "sched_getaffinity") else os.cpu_count())
    params["threads"] = threads
    if args.gpu:
        params.update(GPU_OVERRIDES[mode])
    if args.rounds:
        params["rounds"] = args.rounds
    if args.batch_sizes:
        params["batch_sizes"] = [int(b) for b in args.batch_sizes.split(",")]
    timeout = args.job_timeout or params.pop("job_timeout")
    params.pop("job_timeout", None)
    parts = set(args.only.split(",")) if args.only else {
        "peak", "train", "infer", "export", "pipeline"}
    return mode, params, threads, timeout, parts, set(filter(None, args.skip.split(",")))


def gpu_backends(args):
    if args.backends:  # "none": the PyTorch (torchvision-style) jobs only
        return [b.strip() for b in args.backends.split(",") if b.strip() not in ("", "none")]
    # Every installed one: each child sets its own KERAS_BACKEND, so the
    # caller's (`KERAS_BACKEND=jax python benchmarks/run.py --gpu`) restricts nothing.
    return [b for b in ("jax", "torch") if importlib.util.find_spec(b)]


def main(argv=None):
    args = parse_args(argv)
    mode, params, threads, timeout, parts, skip = plan(args)
    command = "python benchmarks/run.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    env_prefix = f"KERAS_BACKEND={os.environ['KERAS_BACKEND']} " \
        if args.gpu and os.environ.get("KERAS_BACKEND") else ""
    info = machine_info(threads)
    machine = args.machine or machine_slug(info, args.gpu)
    stem = machine + ("" if mode == "full" else f"-{mode}")
    os.makedirs(args.out, exist_ok=True)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    log(f"{command}\nmachine {machine}: {info['cpu']}, {info['cores_usable']} cores, "
        f"{threads} threads, GPUs {info['gpus'] or 'none'}; mode {mode}")

    results = {"schema": SCHEMA, "command": (env_prefix + command).strip(),
               "mode": mode, "machine_name": machine,
               "created_utc": datetime.datetime.now(datetime.timezone.utc)
               .isoformat(timespec="seconds"),
               "machine": info, "settings": params, "flop_convention":
               "VGG-16 forward = 15.47 GMACs at 224x224 (analytic count, "
               "benchmarks/flops.py); training step = 3x forward; 2 FLOPs per MAC",
               "train": [], "inference": [], "export": None, "pipeline": None,
               "gpu": None}
    t0 = time.perf_counter()
    if args.gpu:
        results["gpu"] = run_gpu(args, params, timeout, parts, skip, info, log)
    else:
        run_cpu(params, timeout, parts, skip, results, log, args.out)
    results["targets"] = report.targets(results)
    results["machine"]["load_average_end"] = (os.getloadavg()
                                              if hasattr(os, "getloadavg") else None)
    results["total_wall_s"] = time.perf_counter() - t0

    path = os.path.join(args.out, stem + ".json")
    if (args.only or args.skip or args.gpu) and os.path.exists(path):
        results = merge(path, results, parts, args.gpu)
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    table = report.markdown(results, args.out)
    with open(os.path.join(args.out, stem + ".md"), "w") as f:
        f.write(table)
    plot = None
    if not args.no_plot:
        plot = report.plot(results, os.path.join(args.out, stem + "_throughput.png"))
    log("\n" + table)
    log(f"wrote {path}" + (f", {plot}" if plot else "") + f" in {results['total_wall_s']:.0f} s")
    return results


def merge(path, new, parts, gpu):
    """A partial run (--only, --skip, or a GPU run split over several commands
    to fit a time limit) updates what it ran in an existing results file of the
    same machine and mode and leaves the rest as it was; each job keeps the
    time it ran (`run_utc`)."""
    with open(path) as f:
        old = json.load(f)
    if old.get("mode") != new["mode"] or old.get("schema") != SCHEMA:
        return new
    old.setdefault("updates", []).append(
        {"command": new["command"], "created_utc": new["created_utc"],
         "parts": sorted(parts), "machine": new["machine"]})
    if gpu:
        if not old.get("gpu"):
            old["gpu"] = new["gpu"]
        else:
            fresh = {j["name"]: j for j in new["gpu"]["train"] if j.get("status") != "skipped"}
            names = [j["name"] for j in old["gpu"].get("train", [])]
            old["gpu"]["train"] = [fresh.pop(j["name"], j) for j in old["gpu"].get("train", [])] \
                + [j for n, j in fresh.items() if n not in names]
            if "peak" in new["gpu"]:
                old["gpu"]["peak"] = new["gpu"]["peak"]
    else:
        if "peak" in parts:
            old["peak"] = new.get("peak")
        if "train" in parts:
            old["train"] = new["train"]
        replaced = ({n for n, *_ in CPU_INFER} if "infer" in parts else set()) | \
            ({"saved_model", "onnxruntime"} if "export" in parts else set())
        old["inference"] = [j for j in old.get("inference", [])
                            if j.get("name") not in replaced] + new["inference"]
        for key in ("export", "pipeline"):
            if key in parts:
                old[key] = new[key]
    report.add_cores_needed(old, os.path.dirname(path))
    old["targets"] = report.targets(old)
    return old


def run_rounds(jobs, p, timeout, skip, rounds, log):
    """Runs `jobs` (name, case, params, env) `rounds` times, interleaved
    (A B C A B C ...), and pools each job's samples: drift in the machine's
    speed (other load, clocks) then lands on every implementation alike
    instead of on whichever ran during it."""
    runs = {name: [] for name, *_ in jobs}
    for r in range(rounds):
        if rounds > 1:
            log(f"  round {r + 1} of {rounds}")
        for name, case, extra, env in jobs:
            if name in skip:
                continue
            runs[name].append(run_job(case, dict(p, **extra), env, timeout, log))
    return [{"name": name, **pool(results)} if results else
            {"name": name, "status": "skipped", "reason": "--skip"}
            for name, results in runs.items()]


def pool(results):
    """One job's result from its rounds: samples pooled, figures recomputed."""
    from benchmarks.measure import rate_summaries, summary
    ok = [r for r in results if r.get("status") == "ok"]
    if len(results) == 1 or not ok:
        return results[0]
    base = json.loads(json.dumps(ok[0]))
    base["rounds"] = len(results)
    base["round_status"] = [r.get("status") for r in results]
    base["job_wall_s"] = sum(r.get("job_wall_s", 0) for r in results)
    for key in ("results", "throughput"):
        for i, entry in enumerate(base.get(key) or []):
            if entry.get("status") != "ok":
                continue
            bs = entry["batch_size"]
            same = [e for r in ok for e in r.get(key) or []
                    if e.get("batch_size") == bs and e.get("status") == "ok"]
            rates = [x for e in same for x in e["samples_images_per_s"]]
            new = rate_summaries(bs, rates, entry.get("flops_per_image"),
                                 entry.get("peak_flops"))
            if "latency_ms" in entry:
                new["latency_ms"] = summary([bs / x * 1e3 for x in rates])
            new["first_step_s" if "first_step_s" in entry else "first_call_s"] = \
                entry.get("first_step_s", entry.get("first_call_s"))
            for k in ("final_loss", "api"):
                if k in entry:
                    new[k] = entry[k]
            base[key][i] = new
    lat = base.get("latency")
    if lat and lat.get("status") == "ok":
        samples = [x for r in ok for x in (r.get("latency") or {}).get("samples_ms", [])]
        lat["latency_ms"], lat["samples_ms"] = summary(samples), samples
    return base


def run_cpu(params, timeout, parts, skip, results, log, out_dir):
    peak_flops = None
    if "peak" in parts:
        results["peak"] = run_job("peak", params, {}, timeout, log)
        if results["peak"].get("peak_gflops"):
            peak_flops = results["peak"]["peak_gflops"] * 1e9
    p = dict(params, peak_flops=peak_flops, device="cpu")
    rounds = params.get("rounds", 1)
    if "train" in parts:
        jobs = CPU_TRAIN + (CPU_TRAIN_EXTRA if params.get("extra_jobs") else [])
        results["train"] = run_rounds(jobs, p, timeout, skip, rounds, log)
    if "infer" in parts:
        results["inference"] = [j for j in run_rounds(CPU_INFER, p, timeout, skip,
                                                      rounds, log)
                                if j.get("status") != "skipped"]
    if "export" in parts:
        export_dir = tempfile.mkdtemp(prefix="vgg_bench_export_")
        try:
            # One child per format, so neither's peak memory includes the other's.
            exp = {"status": "ok", "results": {}, "jobs": []}
            for kind in ("saved_model", "onnx"):
                job = run_job("export", dict(p, export_dir=export_dir, formats=[kind]),
                              {"KERAS_BACKEND": "tensorflow"}, timeout, log)
                exp["results"][kind] = (job.get("results") or {}).get(
                    kind, {k: v for k, v in job.items() if k in ("status", "error")})
                exp["jobs"].append(job)
            results["export"] = exp
            for kind, case, name in (("saved_model", "infer_saved_model", "saved_model"),
                                     ("onnx", "infer_onnx", "onnxruntime")):
                r = (exp.get("results") or {}).get(kind, {})
                if r.get("status") == "ok":
                    results["inference"].append({"name": name, **run_job(
                        case, dict(p, path=r["path"]), {}, timeout, log)})
                else:
                    results["inference"].append({
                        "name": name, "status": r.get("status", "not_available"),
                        "reason": r.get("reason") or r.get("error")
                        or "export did not run"})
        finally:
            shutil.rmtree(export_dir, ignore_errors=True)
    if "pipeline" in parts:
        results["pipeline"] = run_job("pipeline", p, {}, timeout, log)
        report.add_cores_needed(results, out_dir)


def run_gpu(args, params, timeout, parts, skip, info, log):
    """Item 4: bf16 training on the GPU; no TensorFlow in any child."""
    have_gpu = bool(info["gpus"])
    device = "gpu" if have_gpu else "cpu"
    if not have_gpu:
        log("  no GPU found (nvidia-smi): running the GPU code path on CPU, as a dry run")
    block = {"BENCH_BLOCK_TENSORFLOW": "1"}
    p = dict(params, device=device)
    out = {"device": info["gpus"][0] if have_gpu else "cpu (dry run: no GPU found)",
           "dry_run": not have_gpu, "train": []}
    if have_gpu:
        out["spec_name"], out["spec_bf16_tflops"] = spec_bf16_tflops(info["gpus"][0])
    peak_flops = None
    # Always (seconds), whatever --only says: every job's utilisation needs it.
    out["peak"] = run_job("peak", p, block, timeout, log)
    if out["peak"].get("peak_gflops"):
        peak_flops = out["peak"]["peak_gflops"] * 1e9
    p["peak_flops"] = peak_flops
    if "train" not in parts:
        return out
    jobs = []
    for backend in gpu_backends(args):
        base = dict(impl="keras_vgg", precision="mixed_bfloat16")
        jobs.append((f"keras_vgg_{backend}", "train_keras", base, {"KERAS_BACKEND": backend}))
        if backend == "torch":
            # Keras' torch backend transposes channels_last convs to NCHW and
            # back around every conv; channels_first avoids that.
            jobs.append((f"keras_vgg_{backend}_channels_first", "train_keras",
                         dict(base, data_format="channels_first"),
                         {"KERAS_BACKEND": backend}))
            jobs.append((f"keras_vgg_{backend}_channels_first_jit", "train_keras",
                         dict(base, data_format="channels_first", jit_compile=True),
                         {"KERAS_BACKEND": backend}))
    if importlib.util.find_spec("torch"):
        jobs.append(("torch_amp_compile", "train_torch",
                     dict(amp="bfloat16", channels_last=True, compile=True), {}))
        jobs.append(("torch_amp_eager", "train_torch",
                     dict(amp="bfloat16", channels_last=True), {}))
    jobs = [(name, case, extra, dict(block, **env)) for name, case, extra, env in jobs]
    out["train"] = run_rounds(jobs, p, timeout, skip, params.get("rounds", 1), log)
    if have_gpu and out.get("spec_bf16_tflops"):
        for job in out["train"]:
            for r in job.get("results", []):
                if r.get("status") == "ok":
                    r["mfu_vs_spec"] = (r["achieved_gflops"]["median"]
                                        / (out["spec_bf16_tflops"] * 1e3))
    return out


if __name__ == "__main__":
    main()
