"""Deployment formats side by side, in one run: size on disk, single-image
latency and batch-8 throughput of every runtime an export feeds, and on
trained models the top-1 agreement with float32 and the held-out accuracy of
each format.

```
python benchmarks/deploy.py                 # VGG-16 at 224 (random weights), every format
python benchmarks/deploy.py --accuracy_model=/tmp/dep/narrow/model.keras \\
    --accuracy_model=/tmp/dep/full/model.keras --skip_speed   # trained models
python benchmarks/deploy.py --tiny --rounds=1 --out=/tmp/d.json   # a quick run (tests)
```

Each export runs as `export/export_vgg.py` does (`--format=saved_model,onnx,
onnx_int8,litert`: calibrated on real images) in a fresh child process,
whose peak RSS and wall time are recorded. Then, in this process, every
runtime loads its artifact with the same thread count (`--threads`, default
the machine's cores): TensorFlow (the SavedModel's `serving_default`), ONNX
Runtime (float32 and int8), LiteRT (float32, float16, dynamic-range int8,
int8; the interpreter's default XNNPACK delegate) and OpenVINO (the float32
ONNX file) when it is installed. Rounds alternate the runtimes, so load on
the machine hits all of them alike; the figures are medians over rounds.
The speed model's inputs are real photos (cut from those scikit-learn
ships), preprocessed as evaluation does; calibration uses other cuts.

Accuracy (`--accuracy_model`, a `.keras` file of a recipe run): the
calibration images are the run's training images and the held-out images
its validation split, both read by the recipes' pipeline (the run's mean
RGB, the central crop of the image rescaled to its eval scale).
Writes `results/deploy_cpu.json` and `.md`.
"""

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FORMATS = "saved_model,onnx,onnx_int8,litert"
UNTRAINED_TOLERANCE = 1e6   # the int8 check of the random-weight speed model
# (runtime, precision, artifact): what is timed, in this order each round.
RUNTIMES = (("TensorFlow", "float32", "saved_model.pb"),
            ("ONNX Runtime", "float32", "model.onnx"),
            ("ONNX Runtime", "int8", "model_int8.onnx"),
            ("LiteRT", "float32", "model_fp32.tflite"),
            ("LiteRT", "float16", "model_fp16.tflite"),
            ("LiteRT", "dynamic_int8", "model_dynamic_int8.tflite"),
            ("LiteRT", "int8", "model_int8.tflite"),
            ("OpenVINO", "float32", "model.onnx"))


# --------------------------------------------------------------------------
# The export, in a child process (its own peak memory)

def export_in_child(model_path, out, calibration, count, test_scale, int8_tolerance=None):
    """Runs the export command on `model_path`; returns its result, peak RSS
    (GiB) and wall time. Called before this process imports TensorFlow, so
    the child's peak is its own (a child starts from its parent's)."""
    result_file = os.path.join(out, "result.json")
    code = ("import json, sys; from keras_vgg.export import deploy, export_vgg; "
            "r = export_vgg.export(sys.argv[1], sys.argv[2], 'vgg', formats=sys.argv[3], "
            "test_scale=int(sys.argv[6]), deploy_options=deploy.Options("
            "calibration_data=sys.argv[4], calibration_images=int(sys.argv[5]), "
            "int8_tolerance=json.loads(sys.argv[8]))); "
            "json.dump(r, open(sys.argv[7], 'w'), indent=1)")
    env = dict(os.environ, TF_ONEDNN_USE_SYSTEM_ALLOCATOR="1", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=str(ROOT))
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, model_path, out, FORMATS,
                             calibration, str(count), str(test_scale), result_file,
                             json.dumps(int8_tolerance)],
                            env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"the export of {model_path} failed (status {status})")
    with open(result_file) as f:
        result = json.load(f)
    return result, usage.ru_maxrss / 2**20, time.perf_counter() - started


def size_on_disk(path):
    if path.endswith("saved_model.pb"):   # and its variables/
        variables = pathlib.Path(path).parent / "variables"
        return os.path.getsize(path) + sum(p.stat().st_size for p in variables.rglob("*"))
    extra = path + ".data"   # the ONNX export's external weights
    return os.path.getsize(path) + (os.path.getsize(extra) if os.path.exists(extra) else 0)


# --------------------------------------------------------------------------
# Runtimes: each a callable from preprocessed images (N, H, W, 3) float32 to
# probabilities (N, classes)

def load_runtime(runtime, precision, path, threads):
    if runtime == "TensorFlow":
        import tensorflow as tf
        fn = tf.saved_model.load(os.path.dirname(path)).signatures["serving_default"]
        return lambda x: fn(images=tf.constant(x))["probabilities"].numpy()
    if runtime == "ONNX Runtime":
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return lambda x: session.run(["probabilities"], {"images": x})[0]
    if runtime == "OpenVINO":
        import openvino as ov
        compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads})
        output = compiled.output("probabilities")
        return lambda x: compiled(x)[output]
    from ai_edge_litert.interpreter import Interpreter

    from keras_vgg.export.litert_export import invoke

    interpreter = Interpreter(model_path=path, num_threads=threads)
    state = {"shape": None}

    def run(x):
        if state["shape"] != x.shape:   # batch 1 as exported, batch 8 by resizing
            interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"],
                                            list(x.shape))
            interpreter.allocate_tensors()
            state["shape"] = x.shape
        return invoke(interpreter, x)
    return run


def runtimes(export_dir, threads, log):
    """`{(runtime, precision): (artifact, size, callable)}` for every artifact
    present (and OpenVINO when it imports)."""
    loaded = {}
    for runtime, precision, artifact in RUNTIMES:
        path = os.path.join(export_dir, artifact)
        if not os.path.exists(path):
            continue
        try:
            fn = load_runtime(runtime, precision, path, threads)
        except ImportError as e:
            log(f"{runtime} {precision}: skipped ({e})")
            continue
        loaded[(runtime, precision)] = (artifact, size_on_disk(path), fn)
    return loaded


# --------------------------------------------------------------------------
# Speed

def speed(loaded, images, rounds, latency_repeats, batch, log):
    import statistics

    import numpy as np

    one, many = images[:1], images[:batch]
    times = {key: {"latency": [], "batch": []} for key in loaded}
    for key, (_, _, fn) in loaded.items():   # warm-up: first calls, batch resizes
        fn(one), fn(many)
    for r in range(rounds):
        for key, (_, _, fn) in loaded.items():
            for i in range(latency_repeats):
                x = images[(r * latency_repeats + i) % len(images)][None]
                t = time.perf_counter()
                fn(x)
                times[key]["latency"].append(time.perf_counter() - t)
            t = time.perf_counter()
            fn(many)
            times[key]["batch"].append(time.perf_counter() - t)
        log(f"round {r + 1}/{rounds} done")
    rows = {}
    for key, (artifact, size, fn) in loaded.items():
        lat, bat = times[key]["latency"], times[key]["batch"]
        rows[key] = {"artifact": artifact, "bytes": size,
                     "latency_ms": {"median": 1e3 * statistics.median(lat),
                                    "min": 1e3 * min(lat), "max": 1e3 * max(lat),
                                    "n": len(lat)},
                     f"batch{batch}_images_per_s": {
                         "median": batch / statistics.median(bat),
                         "min": batch / max(bat), "max": batch / min(bat), "n": len(bat)}}
    reference = loaded[("TensorFlow", "float32")][2](many)
    for key, (_, _, fn) in loaded.items():   # sanity: the same network everywhere
        got = fn(many)
        rows[key]["top1_agreement_with_tf_on_speed_images"] = float(
            np.mean(got.argmax(1) == reference.argmax(1)))
    return rows


# --------------------------------------------------------------------------
# Accuracy on held-out images

def held_out(model_path, data, log):
    """The run's validation images, preprocessed as evaluation does, and labels."""
    import numpy as np

    from keras_vgg.recipes import data as data_lib
    from keras_vgg.recipes import runs, sources

    summary = runs.summary_of(model_path)
    source = sources.load_source(data or summary["dataset"], download=False)
    ds = data_lib.eval_pipeline(source.val, batch_size=64, image_size=summary["image_size"],
                                smallest_side=summary["eval_scale"],
                                mean_rgb=runs.model_mean(model_path, None))
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    x, y = np.concatenate(xs).astype(np.float32), np.concatenate(ys)
    if y.ndim > 1:
        y = y.argmax(1)
    log(f"{len(x)} held-out images of {source.val.name}")
    return x, y


def accuracy(loaded, x, y):
    import numpy as np

    outputs = {}
    for key, (artifact, size, fn) in loaded.items():
        if key[0] == "LiteRT":   # as exported: one image at a time
            outputs[key] = np.concatenate([fn(x[i:i + 1]) for i in range(len(x))])
        else:
            outputs[key] = np.concatenate([fn(x[i:i + 50]) for i in range(0, len(x), 50)])
    reference = outputs[("TensorFlow", "float32")].argmax(1)
    base = float(np.mean(reference == y))
    rows = {}
    for key, probabilities in outputs.items():
        top1 = probabilities.argmax(1)
        fp32 = outputs.get((key[0], "float32"), outputs[("TensorFlow", "float32")]).argmax(1)
        rows[key] = {"artifact": loaded[key][0], "bytes": loaded[key][1],
                     "top1_accuracy": float(np.mean(top1 == y)),
                     "accuracy_change_points": 100 * (float(np.mean(top1 == y)) - base),
                     "top1_agreement_with_tf_float32": float(np.mean(top1 == reference)),
                     "top1_agreement_with_same_runtime_float32": float(np.mean(top1 == fp32)),
                     "images": int(len(y))}
    return rows


# --------------------------------------------------------------------------

def make_model(path, tiny, photos):
    """VGG-16 with random weights whose outputs depend on the image, as a
    trained network's do: He-normal kernels (activations keep their scale
    through the ReLUs), small random biases, and the classifier scaled so the
    logits spread by about 3 on real photos (not saturated, not uniform). A
    default-initialised VGG-16 gives nearly the same probabilities for every
    image, which would make every format "agree" and hide nothing."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_vgg
    from keras_vgg.recipes import data as data_lib

    keras.utils.set_random_seed(0)
    size = 32 if tiny else 224
    model = keras_vgg.VGG16(**(dict(widths=(16, 32, 64, 64, 64), fc_units=128,
                                    input_shape=(32, 32, 3)) if tiny else {}))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.weights:
            kernel, bias = layer.get_weights()
            fan_in = int(np.prod(kernel.shape[:-1]))
            layer.set_weights([rng.normal(0, np.sqrt(2 / fan_in), kernel.shape)
                               .astype("float32"), rng.normal(0, 0.1, bias.shape)
                               .astype("float32")])
    x = np.stack([data_lib.normalize(data_lib.crop(tf.io.read_file(f), 256 if size == 224
                                                   else 36, size),
                                     data_lib.IMAGENET_MEAN_RGB).numpy() for f in photos])
    logits = keras.Model(model.input, model.get_layer("fc2").output)(x) @ \
        model.get_layer("predictions").kernel
    kernel, bias = model.get_layer("predictions").get_weights()
    scale = 3 / float(np.std(np.asarray(logits)))
    model.get_layer("predictions").set_weights([kernel * scale, bias * 0])
    model.save(path)


def machine():
    flags = open("/proc/cpuinfo").read()
    model = next((line.split(":", 1)[1].strip() for line in flags.splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "avx512": "avx512f" in flags,
            "load_average_at_start": os.getloadavg()}


def targets(rows):
    """The issue's targets, per runtime with an int8 and a float32 artifact."""
    out = {}
    for runtime in ("ONNX Runtime", "LiteRT"):
        fp32, int8 = rows.get((runtime, "float32")), rows.get((runtime, "int8"))
        if not fp32 or not int8:
            continue
        key = next(k for k in fp32 if k.endswith("_images_per_s"))
        out[runtime] = {
            "int8_throughput_over_fp32": int8[key]["median"] / fp32[key]["median"],
            "int8_size_over_fp32": int8["bytes"] / fp32["bytes"],
            "int8_latency_speedup": fp32["latency_ms"]["median"] / int8["latency_ms"]["median"]}
    f16, f32 = rows.get(("LiteRT", "float16")), rows.get(("LiteRT", "float32"))
    if f16 and f32:
        out["LiteRT"]["fp16_size_over_fp32"] = f16["bytes"] / f32["bytes"]
    return out


def markdown(report):
    lines = []
    speed_rows = report.get("speed", {}).get("rows", [])
    if speed_rows:
        s = report["speed"]
        lines += [f"VGG-16 at {s['image_size']}x{s['image_size']}, {s['threads']} threads, "
                  f"{s['rounds']} rounds, on {report['machine']['cpu']}:", "",
                  "| runtime | precision | artifact | size (MB) | 1-image latency (ms) | "
                  f"batch-{s['batch']} throughput (images/s) |", "|---|---|---|---|---|---|"]
        for r in speed_rows:
            thr = r[f"batch{s['batch']}_images_per_s"]
            lines.append(f"| {r['runtime']} | {r['precision']} | `{r['artifact']}` | "
                         f"{r['bytes'] / 1e6:.1f} | {r['latency_ms']['median']:.3g} | "
                         f"{thr['median']:.1f} |")
        lines += [""]
    for model in report.get("accuracy", []):
        lines += [f"{model['model']} ({model['images']} held-out images):", "",
                  "| runtime | precision | size (MB) | top-1 (%) | change (points) | "
                  "agreement with float32 (%) |", "|---|---|---|---|---|---|"]
        for r in model["rows"]:
            lines.append(f"| {r['runtime']} | {r['precision']} | {r['bytes'] / 1e6:.2f} | "
                         f"{100 * r['top1_accuracy']:.2f} | "
                         f"{r['accuracy_change_points']:+.2f} | "
                         f"{100 * r['top1_agreement_with_tf_float32']:.2f} |")
        lines += [""]
    return "\n".join(lines)


def flat(rows):
    return [{"runtime": k[0], "precision": k[1], **v} for k, v in rows.items()]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true",
                   help="a narrow VGG-16 at 32x32 instead of the full one at 224")
    p.add_argument("--skip_speed", action="store_true")
    p.add_argument("--accuracy_model", action="append", default=[],
                   help="a recipe run's model.keras (repeatable)")
    p.add_argument("--accuracy_data", default=None,
                   help="its dataset (default: the one in its summary.json)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--latency_repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--calibration_images", type=int, default=300)
    p.add_argument("--int8_tolerance", type=float, default=None,
                   help="the int8 check of the --accuracy_model exports (default "
                        "the exporter's); the speed model's is not enforced")
    p.add_argument("--workdir", default=None, help="keep the exports here")
    p.add_argument("--make_model", default=None, help=argparse.SUPPRESS)
    p.add_argument("photos", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "deploy_cpu.json"))
    args = p.parse_args(argv)

    def log(message):
        print(f"[deploy {time.strftime('%H:%M:%S')}] {message}", flush=True)

    if args.make_model:
        return make_model(args.make_model, args.tiny, args.photos)
    work = args.workdir or tempfile.mkdtemp(prefix="keras_vgg_deploy_")
    os.makedirs(work, exist_ok=True)
    report = {"command": "python benchmarks/deploy.py " + " ".join(argv or sys.argv[1:]),
              "machine": machine(), "threads": args.threads}
    size = 32 if args.tiny else 224

    # Exports first, each in a child, while this process is still small.
    exports = []
    if not args.skip_speed:
        from benchmarks.cases_pipeline import make_jpegs
        from benchmarks.transfer_epoch import folder_dataset

        photos = folder_dataset(os.path.join(work, "photos"), args.calibration_images)
        model_path = os.path.join(work, "vgg16.keras")
        speed_images = make_jpegs(os.path.join(work, "speed_photos"), 16, seed=1)
        if not os.path.exists(model_path):   # in a child: this process stays small
            subprocess.run([sys.executable, __file__, "--make_model", model_path,
                            *(["--tiny"] if args.tiny else []), *speed_images[:4]],
                           check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        # Random weights: int8's agreement with float32 means nothing there
        # (measured and reported, not enforced); the trained models' is.
        exports.append(("speed", model_path, f"folder:{photos}",
                        36 if args.tiny else 256, UNTRAINED_TOLERANCE))
    for path in args.accuracy_model:
        summary = json.load(open(os.path.join(os.path.dirname(path), "summary.json")))
        exports.append((path, path, args.accuracy_data or summary["dataset"],
                        summary["eval_scale"], args.int8_tolerance))
    done = {}
    for key, path, calibration, test_scale, tolerance in exports:
        out = os.path.join(work, "export_" + str(len(done)))
        log(f"exporting {path} ({FORMATS}, {args.calibration_images} calibration images)")
        result, peak, wall = export_in_child(path, out, calibration, args.calibration_images,
                                             test_scale, tolerance)
        log(f"exported in {wall:.0f} s, peak RSS {peak:.2f} GiB")
        done[key] = {"dir": result["path"], "export_peak_rss_gib": peak,
                     "export_wall_s": wall, "checks": result.get("artifacts", {}),
                     "onnx_max_abs_diff": result.get("onnx_max_abs_diff")}

    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    if not args.skip_speed:
        import numpy as np

        from keras_vgg.recipes import data as data_lib
        images = np.stack([data_lib.normalize(data_lib.crop(
            tf.io.read_file(f), 256 if size == 224 else 36, size),
            data_lib.IMAGENET_MEAN_RGB).numpy() for f in speed_images]).astype(np.float32)
        loaded = runtimes(done["speed"]["dir"], args.threads, log)
        rows = speed(loaded, images, args.rounds, args.latency_repeats, args.batch, log)
        report["speed"] = {"image_size": size, "threads": args.threads, "rounds": args.rounds,
                           "batch": args.batch, "model": "VGG-16 (random weights)",
                           **{k: v for k, v in done["speed"].items() if k != "dir"},
                           "targets": targets(rows), "rows": flat(rows)}
        del loaded
    report["accuracy"] = []
    for path in args.accuracy_model:
        x, y = held_out(path, args.accuracy_data, log)
        loaded = runtimes(done[path]["dir"], args.threads, log)
        rows = accuracy(loaded, x, y)
        report["accuracy"].append({"model": path, "images": int(len(y)),
                                   **{k: v for k, v in done[path].items() if k != "dir"},
                                   "rows": flat(rows)})
        del loaded
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    table = markdown(report)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(table + "\n")
    print(table)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
