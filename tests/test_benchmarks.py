"""The benchmark code runs end to end on a tiny setting (benchmarks/, issue 5).

Not timed unit tests: these check that every part of `benchmarks/run.py`
runs and writes well-formed results (keys present, figures positive), never
how fast anything is. Each run is a few child processes on narrow 32x32 nets.
"""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import flops, report  # noqa: E402

pytest.importorskip("torch")


def _run(tmp_path, *args, env=None):
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--tiny",
           "--out", str(tmp_path), "--machine", "testbox", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **(env or {})))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(tmp_path / "testbox-tiny.json") as f:
        results = json.load(f)
    assert (tmp_path / "testbox-tiny.md").read_text().startswith("### testbox (tiny)")
    return results, proc.stdout


def _positive_summary(s):
    assert set(s) >= {"median", "min", "max", "n"}
    assert 0 < s["min"] <= s["median"] <= s["max"] and math.isfinite(s["max"])


def _check_train_job(job, batch_sizes=(2, 4)):
    assert job["status"] == "ok", job
    assert [r["batch_size"] for r in job["results"]] == list(batch_sizes)
    for r in job["results"]:
        assert r["status"] == "ok", r
        for key in ("images_per_s", "step_s", "achieved_gflops", "mfu"):
            _positive_summary(r[key])
        assert r["first_step_s"] > 0 and math.isfinite(r["final_loss"])


def test_flop_count_is_the_papers():
    assert flops.forward_macs() == pytest.approx(15.47e9, rel=1e-3)
    assert flops.train_flops_per_image() == 6 * flops.forward_macs()


def test_torch_vgg16_is_torchvisions_layout():
    from benchmarks import torch_vgg
    model = torch_vgg.vgg16()
    state = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == 138_357_544
    assert list(state)[:2] == ["features.0.weight", "features.0.bias"]
    assert list(state)[-2:] == ["classifier.6.weight", "classifier.6.bias"]
    assert state["features.28.weight"].shape == (512, 512, 3, 3)


def test_cpu_training_and_inference(tmp_path):
    results, stdout = _run(tmp_path, "--only", "peak,train,infer",
                           "--skip", "keras_applications,torch_compile")
    assert "#### Training step" in stdout
    assert results["schema"] == 1 and results["mode"] == "tiny"
    assert results["command"].startswith("python benchmarks/run.py --tiny")
    machine = results["machine"]
    assert machine["cores_usable"] >= 1 and machine["versions"]["keras"]
    assert machine["threads"] >= 1 and machine["cpu"]
    assert results["peak"]["status"] == "ok" and results["peak"]["peak_gflops"] > 0

    train = {j["name"]: j for j in results["train"]}
    assert set(train) == {"keras_vgg", "keras_applications", "torch_eager",
                          "torch_compile"}
    for name in ("keras_vgg", "torch_eager"):
        _check_train_job(train[name])
    assert train["keras_vgg"]["backend"] == "tensorflow"
    assert train["keras_vgg"]["api"] == "model.train_on_batch"
    assert train["torch_compile"]["status"] == "skipped"

    infer = {j["name"]: j for j in results["inference"]}
    assert set(infer) == {"keras_vgg", "torch_eager"}
    for job in infer.values():
        assert job["status"] == "ok", job
        for r in job["throughput"]:
            assert r["status"] == "ok", r
            _positive_summary(r["images_per_s"])
        _positive_summary(job["latency"]["latency_ms"])
    assert os.path.exists(tmp_path / "testbox-tiny_throughput.png") or \
        results.get("plot", {}).get("status") == "not_available"


def test_export_and_input_pipeline(tmp_path):
    """Exports and the recipes' pipeline are measured when present and marked
    not available otherwise; never a made-up number."""
    results, _ = _run(tmp_path, "--only", "export,pipeline", "--no-plot")
    exports = results["export"]["results"]
    assert set(exports) == {"saved_model", "onnx"}
    infer = {j["name"]: j for j in results["inference"]}
    for kind, name in (("saved_model", "saved_model"), ("onnx", "onnxruntime")):
        if exports[kind]["status"] == "ok":
            assert exports[kind]["export_s"] > 0 and exports[kind]["size_mb"] > 0
            assert exports[kind]["peak_rss_mb"] > 0
            assert infer[name]["status"] == "ok", infer[name]
            _positive_summary(infer[name]["throughput"][0]["images_per_s"])
        else:
            assert exports[kind]["status"] == "not_available", exports[kind]
            assert "images_per_s" not in json.dumps(infer[name])

    pipe = results["pipeline"]
    assert pipe["status"] == "ok" and pipe["images"] == 8
    assert 20_000 < pipe["jpeg_bytes_mean"] < 200_000  # real encoded JPEGs
    for key in ("reference", "recipes"):
        entry = pipe[key]
        if key == "recipes" and entry["status"] == "not_available":
            assert "not available" in entry["reason"]
            continue
        assert entry["status"] == "ok", entry
        assert entry["images_per_s_per_core"] > 0
        _positive_summary(entry["by_threads"]["1"])
    # No GPU figures here: the cores needed for the GPU target rate.
    rate = pipe["gpu_rate"]
    assert not rate["measured"] and 4000 < rate["images_per_s"] < 4500
    assert pipe["cores_needed"] == math.ceil(
        rate["images_per_s"] / pipe["recipes"]["images_per_s_per_core"])


def test_pipeline_ab_compares_a_revision_with_the_tree(tmp_path):
    """`pipeline_ab.py` imports recipes/data.py as it was at a revision and
    times it beside the working tree's, in one process."""
    out = tmp_path / "ab.json"
    subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "pipeline_ab.py"),
                    "HEAD", "--rounds", "1", "--images", "32", "--out", str(out)],
                   check=True, cwd=ROOT, timeout=600)
    ab = json.loads(out.read_text())
    assert len(ab["old_commit"]) == 40 and ab["threads"] == 1
    assert len(ab["samples"]["old"]) == len(ab["samples"]["new"]) == 1
    rates = ab["images_per_s"]
    assert rates["old"]["median"] > 0 and rates["new"]["median"] > 0
    assert ab["speedup"] == pytest.approx(rates["new"]["median"] / rates["old"]["median"])
    stages = ab["new_stages_ms_per_image"]
    assert len(stages) == 3 and all(s["median"] > 0 for s in stages.values())


def test_gpu_path_runs_without_tensorflow(tmp_path):
    """`--gpu` imports no TensorFlow (the GPU machines have none); without a
    GPU it is a dry run on CPU, on the PyTorch backend (JAX is not installed)."""
    # Compiling takes minutes on CPU, and channels_last Keras is the CPU test's.
    skip = "torch_amp_compile,keras_vgg_torch_channels_first_jit,keras_vgg_torch"
    results, _ = _run(tmp_path, "--gpu", "--backends", "torch", "--no-plot",
                      "--skip", skip, env={"KERAS_BACKEND": "jax"})
    gpu = results["gpu"]
    assert gpu["dry_run"] is True and gpu["peak"]["status"] == "ok"
    assert results["command"].startswith("KERAS_BACKEND=jax python benchmarks/run.py")
    jobs = {j["name"]: j for j in gpu["train"]}
    assert [j["status"] for j in gpu["train"]].count("skipped") == 3
    for name in ("keras_vgg_torch_channels_first", "torch_amp_eager"):
        _check_train_job(jobs[name])
        assert jobs[name]["tensorflow_imported"] is False
    assert jobs["keras_vgg_torch_channels_first"]["backend"] == "torch"
    assert jobs["keras_vgg_torch_channels_first"]["precision"] == "mixed_bfloat16"
    assert jobs["keras_vgg_torch_channels_first"]["data_format"] == "channels_first"
    assert jobs["torch_amp_eager"]["amp"] == "bfloat16"
    assert jobs["torch_amp_eager"]["channels_last"] is True
    assert results["train"] == [] and results["pipeline"] is None


def test_report_renders_missing_parts():
    results = {"machine_name": "m", "mode": "quick", "command": "c", "created_utc": "t",
               "machine": {"cpu": "x", "cores_usable": 2, "threads": 2, "versions": {},
                           "load_average_start": None},
               "train": [{"name": "keras_vgg", "status": "error", "error": "boom"}],
               "inference": [{"name": "onnxruntime", "status": "not_available",
                              "reason": "not available yet: export"}],
               "export": {"status": "ok", "results": {"onnx": {
                   "status": "not_available", "reason": "not available yet"}}},
               "pipeline": None, "gpu": None}
    results["targets"] = report.targets(results)
    text = report.markdown(results)
    assert "error: boom" in text and "not_available: not available yet" in text
    assert results["targets"] == {}


def test_transfer_epoch_runs_and_writes_its_figures(tmp_path):
    """`transfer_epoch.py` times an epoch on the cache beside one through the
    frozen base, and the svm descriptors (tiny setting; figures not judged)."""
    out = tmp_path / "transfer.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "transfer_epoch.py"),
                           "--tiny", "--images=32", "--rounds=1", f"--out={out}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert len(result["epoch_seconds_on_cache"]) == len(result["epoch_seconds_frozen_base"]) == 1
    assert result["speedup_median"] > 0 and result["svm_descriptor_seconds_per_image"] > 0
    assert "epoch takes" in proc.stdout


def test_deploy_benchmark_times_every_format_and_scores_a_trained_model(tmp_path):
    """`deploy.py` exports every format (in a child, peak memory recorded),
    times each runtime on the same images, and scores each format on a run's
    held-out images (tiny settings; the figures are not judged here)."""
    import keras
    import numpy as np

    import keras_vgg
    from keras_vgg.recipes import sources

    data = sources.write_digits(tmp_path / "digits")
    run = tmp_path / "run"
    run.mkdir()
    keras.utils.set_random_seed(0)
    model = keras_vgg.VGG("A", classes=10, input_shape=(32, 32, 3), widths=(4, 8, 8, 16, 16),
                          fc_units=32)
    rng = np.random.default_rng(0)   # spread weights: outputs that depend on the image
    model.set_weights([w + rng.normal(0, 0.3 / np.sqrt(max(1, w.size // w.shape[-1])),
                                      w.shape).astype("float32") for w in model.get_weights()])
    model.save(run / "model.keras")
    (run / "summary.json").write_text(json.dumps({
        "dataset": f"folder:{data}", "image_size": 32, "eval_scale": 36,
        "mean_rgb": [78.0, 78.0, 78.0]}))
    out = tmp_path / "deploy.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "deploy.py"),
                           "--tiny", "--rounds=1", "--latency_repeats=2",
                           "--calibration_images=16", "--int8_tolerance=1",   # untrained
                           f"--accuracy_model={run / 'model.keras'}",
                           f"--workdir={tmp_path / 'work'}", f"--out={out}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {(r["runtime"], r["precision"]): r for r in result["speed"]["rows"]}
    assert {("TensorFlow", "float32"), ("ONNX Runtime", "float32"), ("ONNX Runtime", "int8"),
            ("LiteRT", "float32"), ("LiteRT", "float16"), ("LiteRT", "dynamic_int8"),
            ("LiteRT", "int8")} <= set(rows)
    assert rows[("LiteRT", "int8")]["bytes"] < rows[("LiteRT", "float32")]["bytes"] / 2
    assert all(r["batch8_images_per_s"]["median"] > 0 and r["latency_ms"]["n"] == 2
               for r in rows.values())
    assert rows[("LiteRT", "float32")]["top1_agreement_with_tf_on_speed_images"] == 1.0
    assert 0.3 < result["speed"]["export_peak_rss_gib"] < 4
    assert set(result["speed"]["targets"]) == {"ONNX Runtime", "LiteRT"}
    (scored,) = result["accuracy"]
    assert scored["images"] == 299
    tf_row = next(r for r in scored["rows"] if r["runtime"] == "TensorFlow")
    assert tf_row["top1_agreement_with_tf_float32"] == 1.0
    assert tf_row["accuracy_change_points"] == 0
    assert "| LiteRT | int8 |" in (tmp_path / "deploy.md").read_text()
