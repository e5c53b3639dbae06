"""Tables, target checks and the plot of a results file (no framework imports).

    python benchmarks/report.py benchmarks/results/<machine>.json   # re-render
"""

import glob
import json
import math
import os
import sys

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _ok(entries):
    return [e for e in entries or [] if e.get("status") == "ok"]


def _by_batch(job, key="results"):
    return {r["batch_size"]: r for r in _ok(job.get(key))}


def _job(jobs, name):
    return next((j for j in jobs or [] if j.get("name") == name), None)


def _fmt(s, digits=1):
    """'median [min-max]' of a summary dict."""
    if not s:
        return "-"
    f = f"{{:.{digits}f}}"
    return f"{f.format(s['median'])} [{f.format(s['min'])}-{f.format(s['max'])}]"


def _ratios(a, b, key="results"):
    """Median images/s of job a over job b at each batch size both ran."""
    if not a or not b:
        return {}
    ra, rb = _by_batch(a, key), _by_batch(b, key)
    return {str(bs): ra[bs]["images_per_s"]["median"] / rb[bs]["images_per_s"]["median"]
            for bs in sorted(set(ra) & set(rb))}


def targets(results):
    """The issue's 'Where we must stand', checked against this run's figures.
    A ratio > 1 means keras_vgg is faster. Nothing is claimed for a pair that
    did not both run."""
    out = {}
    if results.get("mode") == "tiny":
        out["note"] = {"met": False, "reason": "--tiny: narrow 32x32 networks (keras."
                       "applications is full width), no target applies"}
        return out
    train, infer = results.get("train"), results.get("inference")
    kv = _job(train, "keras_vgg")
    for other, key in (("keras_applications", "train_vs_keras_applications"),
                       ("torch_eager", "train_vs_torch_eager"),
                       ("torch_compile", "train_vs_torch_compile")):
        r = _ratios(kv, _job(train, other))
        if r:
            out[key] = {"ratio_by_batch": r,
                        "met": all(v >= (0.98 if other == "keras_applications" else 1.0)
                                   for v in r.values())}
    ki = _job(infer, "keras_vgg")
    for other in ("keras_applications", "torch_eager"):
        r = _ratios(ki, _job(infer, other), key="throughput")
        if r:
            out[f"inference_vs_{other}"] = {
                "ratio_by_batch": r,
                "met": all(v >= (0.98 if other == "keras_applications" else 1.0)
                           for v in r.values())}
    gpu = results.get("gpu")
    if gpu and not gpu.get("dry_run"):
        ours = [j for j in gpu.get("train", []) if j.get("name", "").startswith("keras_vgg")]
        theirs = _job(gpu.get("train"), "torch_amp_compile") or _job(gpu.get("train"),
                                                                     "torch_amp_eager")
        best = {}
        for j in ours:
            for bs, r in _by_batch(j).items():
                if bs not in best or r["images_per_s"]["median"] > best[bs][1]:
                    best[bs] = (j["name"], r["images_per_s"]["median"], r.get("mfu_vs_spec"))
        if theirs:
            tb = _by_batch(theirs)
            ratio = {str(bs): best[bs][1] / tb[bs]["images_per_s"]["median"]
                     for bs in best if bs in tb}
            out["gpu_train_vs_torch_amp"] = {
                "against": theirs["name"], "ratio_by_batch": ratio,
                "best_keras_vgg_by_batch": {str(k): v[0] for k, v in best.items()},
                "met": bool(ratio) and all(v >= 1.0 for v in ratio.values())}
        mfus = [v[2] for v in best.values() if v[2] is not None]
        if mfus:
            out["gpu_mfu_vs_spec_40pct"] = {"best": max(mfus), "met": max(mfus) >= 0.40}
    pipe = results.get("pipeline") or {}
    if pipe.get("cores_needed"):
        measured = (pipe.get("gpu_rate") or {}).get("measured")
        out["pipeline_feeds_gpu_on_16_cores"] = {
            "cores_needed": pipe["cores_needed"],
            "for": "measured GPU step rate" if measured else
                   "target GPU step rate (no GPU measured)",
            "met": pipe["cores_needed"] <= 16}
    return out


def _best_gpu_rate(results, out_dir):
    """Best keras_vgg GPU training images/s: this run's, else a GPU results file."""
    candidates = [results] if results.get("gpu") else []
    for path in sorted(glob.glob(os.path.join(out_dir, "gpu-*.json"))):
        try:
            with open(path) as f:
                candidates.append(json.load(f))
        except (OSError, ValueError):
            continue
    best = None
    for res in candidates:
        gpu = res.get("gpu") or {}
        if gpu.get("dry_run"):
            continue
        for job in gpu.get("train", []):
            for r in _ok(job.get("results")):
                rate = r["images_per_s"]["median"]
                if best is None or rate > best[0]:
                    best = (rate, f"{gpu.get('device')}, {job['name']}, batch "
                                  f"{r['batch_size']} ({res.get('created_utc')})")
    return best


def _target_gpu_rate():
    """Without a GPU measurement: the rate of the issue's GPU target, a VGG-16
    training step at 40% of an H100 SXM's dense bf16 peak."""
    from benchmarks.flops import GPU_SPEC_BF16_TFLOPS, forward_macs
    peak = GPU_SPEC_BF16_TFLOPS["H100 SXM"]
    macs = forward_macs()
    rate = 0.40 * peak * 1e12 / (3 * 2 * macs)  # step = 3 x forward, 2 FLOP/MAC
    return rate, (f"no GPU measured yet, so the target: 40% of an H100 SXM's "
                  f"{peak} TFLOP/s bf16 peak at 3 x 2 x {macs / 1e9:.2f} GMACs "
                  "per training image")


def add_cores_needed(results, out_dir):
    """Cores the input pipeline needs to keep the GPU step fed (item 3 vs 4)."""
    pipe = results.get("pipeline")
    if not pipe or pipe.get("status") != "ok":
        return
    best = _best_gpu_rate(results, out_dir)
    measured = best is not None
    best = best or _target_gpu_rate()
    pipe["gpu_rate"] = {"images_per_s": best[0], "from": best[1], "measured": measured}
    for key in ("recipes", "reference"):
        entry = pipe.get(key) or {}
        if entry.get("status") == "ok":
            per_core = entry["images_per_s_per_core"]
            entry["cores_needed"] = math.ceil(best[0] / per_core)
    if (pipe.get("recipes") or {}).get("cores_needed"):
        pipe["cores_needed"] = pipe["recipes"]["cores_needed"]


def markdown(results, out_dir=None):
    """The Markdown tables of a results dict (`out_dir`: where to look for the
    export work's `export_cpu.json`)."""
    m = results["machine"]
    lines = [f"### {results['machine_name']} ({results['mode']})", "",
             f"`{results['command']}` on {results['created_utc']}: {m['cpu']}, "
             f"{m['cores_usable']} cores, {m['threads']} threads per framework"
             + (f", GPU {', '.join(m['gpus'])}" if m.get("gpus") else "")
             + f"; load average {_load(m)}. Versions: "
             + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + ".", ""]
    lines.append("Figures: median [min-max] over timed blocks after warm-up. "
                 + results.get("flop_convention", "") + ".")
    lines.append("")
    peak = results.get("peak")
    if peak:
        lines.append(f"Measured matmul peak ({peak.get('dtype')}, n={peak.get('matmul_size')}):"
                     f" {_num(peak.get('peak_gflops'))} GFLOP/s (" + ", ".join(
                         f"{k} {_fmt(v)}" for k, v in peak.get("by_library", {}).items()
                         if "median" in v) + ").")
        lines.append("")
    if results.get("train"):
        lines += ["#### Training step (synthetic data, SGD momentum, cross-entropy)", "",
                  "| implementation | how | batch | images/s | MFU | first step s |",
                  "|---|---|---|---|---|---|"]
        lines += _train_rows(results["train"])
        lines.append("")
    if results.get("inference"):
        lines += ["#### Inference", "",
                  "| implementation | how | batch | images/s | batch latency ms | "
                  "1-image latency ms |", "|---|---|---|---|---|---|"]
        for job in results["inference"]:
            if job.get("status") != "ok":
                lines.append(f"| {job['name']} | {_why(job)} | | | | |")
                continue
            lat = job.get("latency") or {}
            one = _fmt(lat.get("latency_ms")) if lat.get("status") == "ok" else _why(lat)
            for r in job.get("throughput", []):
                if r.get("status") != "ok":
                    lines.append(f"| {job['name']} | {_why(r)} | {r.get('batch_size')} | | | |")
                    continue
                lines.append(f"| {job['name']} | {_how(job)} | {r['batch_size']} | "
                             f"{_fmt(r['images_per_s'])} | {_fmt(r['latency_ms'])} | {one} |")
        lines.append("")
    exp = results.get("export")
    if exp:
        lines += ["#### Export", "", "| format | function | seconds | peak RSS MB "
                  "(increase) | size MB |", "|---|---|---|---|---|"]
        for kind, r in (exp.get("results") or {}).items():
            if r.get("status") == "ok":
                lines.append(f"| {kind} | `{r['function']}` | {r['export_s']:.1f} | "
                             f"{r['peak_rss_mb']:.0f} (+{r['peak_rss_increase_mb']:.0f}) | "
                             f"{r['size_mb']:.1f} |")
            else:
                lines.append(f"| {kind} | {_why(r)} | | | |")
        if exp.get("status") != "ok":
            lines.append(f"| all | {_why(exp)} | | | |")
        lines.append("")
        lines += _export_work_rows(out_dir)
    pipe = results.get("pipeline")
    if pipe:
        lines += ["#### Training input pipeline (real ~500x375 JPEGs: decode, scale "
                  "jitter, crop, flip, PCA colour shift)", "",
                  "| pipeline | images/s, 1 thread | images/s, all cores | "
                  "cores to feed the GPU |", "|---|---|---|---|"]
        if pipe.get("status") != "ok":
            lines.append(f"| - | {_why(pipe)} | | |")
        for key in ("recipes", "reference"):
            e = pipe.get(key)
            if not e:
                continue
            if e.get("status") != "ok":
                lines.append(f"| {key} | {_why(e)} | | |")
                continue
            allc = e["by_threads"][str(pipe["cores_available"])]
            lines.append(f"| {key} (`{e['function']}`) | {_fmt(e['by_threads']['1'])} | "
                         f"{_fmt(allc)} ({pipe['cores_available']} threads) | "
                         f"{e.get('cores_needed', '-')} |")
        g = pipe.get("gpu_rate") or {}
        lines.append("")
        lines.append("GPU step rate to feed: " + (
            f"{g['images_per_s']:.0f} images/s ({g['from']})" if "images_per_s" in g
            else g.get("reason", "-")) + ".")
        lines.append("")
    gpu = results.get("gpu")
    if gpu:
        lines += [f"#### GPU training, bf16 ({gpu['device']})", ""]
        if gpu.get("spec_bf16_tflops"):
            lines.append(f"Data-sheet dense bf16 peak ({gpu['spec_name']}): "
                         f"{gpu['spec_bf16_tflops']} TFLOP/s.")
        if gpu.get("peak"):
            lines.append(f"Measured matmul peak: {_num(gpu['peak'].get('peak_gflops'))} GFLOP/s.")
        lines += ["", "| implementation | how | batch | images/s | MFU (measured peak) | "
                  "MFU (data sheet) | first step s |", "|---|---|---|---|---|---|---|"]
        lines += _train_rows(gpu.get("train", []), digits=1, with_spec=True)
        lines.append("")
    t = results.get("targets")
    if t:
        lines += ["#### Targets (ratio > 1: keras_vgg faster)", "",
                  "| target | by batch size | met |", "|---|---|---|"]
        for k, v in t.items():
            if "reason" in v:
                lines.append(f"| {k} | {v['reason']} | - |")
                continue
            detail = v.get("ratio_by_batch") or {kk: vv for kk, vv in v.items() if kk != "met"}
            lines.append(f"| {k} | " + ", ".join(
                f"{kk}: {vv:.2f}" if isinstance(vv, float) else f"{kk}: {vv}"
                for kk, vv in detail.items()) + f" | {'yes' if v['met'] else 'NO'} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _export_work_rows(out_dir):
    """The export work's own measurements (export/benchmark_export.py writes
    results/export_cpu.json): the whole `export()`, `.keras` load and ONNX
    check included, one child process per model and format."""
    path = os.path.join(out_dir or "", "export_cpu.json")
    if not out_dir or not os.path.exists(path):
        return []
    try:
        with open(path) as f:
            data = json.load(f)
        rows = ["From `export/benchmark_export.py` (`results/export_cpu.json`): the "
                "whole `export()`, ONNX check included, each in a fresh process.", "",
                "| model | format | seconds | peak RSS MB | size MB |", "|---|---|---|---|---|"]
        for r in data.get("results", []):
            rows.append(f"| {r['model']} | {r['format']} | {r['wall_s']:.1f} | "
                        f"{r['peak_rss_bytes'] / 2**20:.0f} | {r['artifact_bytes'] / 2**20:.0f} |")
        return rows + [""]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return [f"(results/export_cpu.json unreadable: {e})", ""]


def _train_rows(jobs, digits=2, with_spec=False):
    """Training-table rows; `with_spec` adds the GPU's MFU against its data sheet."""
    gap = " |" if with_spec else ""  # the extra column, empty on error rows
    rows = []
    for job in jobs:
        if job.get("status") != "ok":
            rows.append(f"| {job['name']} | {_why(job)} | | | | |{gap}")
            continue
        for r in job.get("results", []):
            if r.get("status") != "ok":
                rows.append(f"| {job['name']} | {_why(r)} | {r.get('batch_size')} | | | |{gap}")
                continue
            spec = r.get("mfu_vs_spec")
            extra = f" {'-' if spec is None else f'{spec:.1%}'} |" if with_spec else ""
            rows.append(f"| {job['name']} | {_how(job)} | {r['batch_size']} | "
                        f"{_fmt(r['images_per_s'], digits)} | {_pct(r.get('mfu'))} |"
                        f"{extra} {r['first_step_s']:.1f} |")
    return rows


def _how(job):
    if "backend" in job:
        s = f"{job['backend']}, {job.get('api', '')}"
        if "jit_compile" in job:
            s += f", jit_compile={job['jit_compile']}"
        if job.get("precision") not in (None, "float32"):
            s += f", {job['precision']}"
        if job.get("data_format") == "channels_first":
            s += ", channels_first"
        return s
    s = job.get("api", "")
    if job.get("channels_last"):
        s += ", channels_last"
    return s


def _why(entry):
    status = entry.get("status", "?")
    text = entry.get("reason") or entry.get("error") or ""
    text = " ".join(str(text).split())[:160].replace("|", "/")
    return f"{status}: {text}" if text else status


def _pct(s):
    return "-" if not s else f"{s['median']:.1%}"


def _num(x):
    return "-" if x is None else f"{x:.0f}"


def _load(m):
    a, b = m.get("load_average_start"), m.get("load_average_end")
    fmt = lambda v: "?" if not v else f"{v[0]:.1f}"  # noqa: E731
    return f"{fmt(a)} at start, {fmt(b)} at end"


def plot(results, path):
    """Training images/s by batch size, one line per implementation (min-max bars)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        results["plot"] = {"status": "not_available", "reason": "matplotlib not installed"}
        return None
    panels = [("CPU, float32", results.get("train") or [])]
    gpu = results.get("gpu")
    if gpu and gpu.get("train"):
        panels.append((f"GPU bf16: {gpu['device']}", gpu["train"]))
    panels = [(t, jobs) for t, jobs in panels if any(_ok(j.get("results")) for j in jobs)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5),
                             squeeze=False)
    for ax, (title, jobs) in zip(axes[0], panels):
        for job in jobs:
            rs = _ok(job.get("results"))
            if not rs:
                continue
            bs = [r["batch_size"] for r in rs]
            med = [r["images_per_s"]["median"] for r in rs]
            err = [[m - r["images_per_s"]["min"] for m, r in zip(med, rs)],
                   [r["images_per_s"]["max"] - m for m, r in zip(med, rs)]]
            ax.errorbar(bs, med, yerr=err, marker="o", capsize=3, label=job["name"])
        ax.set_xscale("log", base=2)
        ticks = sorted({r["batch_size"] for j in jobs for r in _ok(j.get("results"))})
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("batch size")
        ax.set_ylabel("training images/s")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    m = results["machine"]
    fig.suptitle(f"VGG-16 training step, {results['machine_name']} ({results['mode']}), "
                 f"{m['threads']} threads", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    # report.py [--write] RESULTS.json ...: re-render (and with --write update
    # the file, its .md and plot), e.g. once a GPU results file has arrived
    # beside a CPU one, for the cores the input pipeline needs.
    write = "--write" in sys.argv
    for p in [a for a in sys.argv[1:] if a != "--write"]:
        with open(p) as f:
            res = json.load(f)
        add_cores_needed(res, os.path.dirname(os.path.abspath(p)))
        res["targets"] = targets(res)
        text = markdown(res, os.path.dirname(os.path.abspath(p)))
        print(text)
        if write:
            with open(p, "w") as f:
                json.dump(res, f, indent=1)
            with open(p[:-len(".json")] + ".md", "w") as f:
                f.write(text)
            plot(res, p[:-len(".json")] + "_throughput.png")
