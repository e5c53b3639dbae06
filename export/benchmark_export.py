"""Peak memory and wall time of the exports, for VGG-11/16/19 (random weights).

```
python export/benchmark_export.py [--depths=11,16,19] [--formats=onnx,saved_model]
    [--json=benchmarks/results/export_cpu.json]
```

Each measurement runs in a fresh child process that loads the `.keras` file
and exports it (`export_vgg.export`, ONNX check included), so its peak RSS
(`ru_maxrss`) is what a user of `export/export_vgg.py` sees, TensorFlow's own
footprint included. The `.keras` files are written first by another child.

`--naive` instead measures the plain tf2onnx route (variables captured and
frozen into constants, all optimizer passes) stage by stage, to show where
its memory goes (the README, section "Export"). It takes ~60x the weights' size: run it
only on a narrow head (`--depths=16 --fc_units=512`: 0.11 GiB of weights,
6.6 GiB peak), never on the paper's 4096-wide head.
"""

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("depths", ["11", "16", "19"], "VGG depths to measure.")
flags.DEFINE_list("formats", ["onnx", "saved_model"], "Formats, measured separately.")
flags.DEFINE_integer("fc_units", 4096, "Width of fc1/fc2 (4096 is the paper's).")
flags.DEFINE_string("json", None, "Where to write results; default "
                    "benchmarks/results/export_cpu.json (export_cpu_naive*.json with --naive).")
flags.DEFINE_bool("naive", False,
                  "Measure the plain tf2onnx conversion instead (narrow heads only).")
flags.DEFINE_bool("naive_gc", False, "With --naive: run Python's garbage collector before each "
                  "of tf2onnx's optimizer passes (each pass deep-copies the graph).")
# Internal: what a child process does.
flags.DEFINE_enum("child", None, ["build", "export", "naive"], "internal")
flags.DEFINE_string("model", None, "internal")
flags.DEFINE_string("format", None, "internal")

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GiB = 2**30


def _peak_rss():
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _vm(field):
    """Current (VmRSS) or peak (VmHWM) resident memory of this process, bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _build(depth, path):
    import keras_vgg

    model = keras_vgg.VGG(depth, fc_units=FLAGS.fc_units)
    model.save(path)
    weights = sum(w.numpy().nbytes for w in model.weights)
    return {"weights_bytes": weights}


def _export(path, fmt):
    from keras_vgg.export import export_vgg

    with tempfile.TemporaryDirectory() as out:
        start = time.monotonic()
        result = export_vgg.export(path, out, "vgg", formats=[fmt])
        wall = time.monotonic() - start
        version = result["path"]
        size = sum(os.path.getsize(os.path.join(d, f))
                   for d, _, fs in os.walk(version) for f in fs)
    return {"wall_s": round(wall, 1), "peak_rss_bytes": _peak_rss(),
            "artifact_bytes": size, "onnx_max_abs_diff": result.get("onnx_max_abs_diff")}


def _naive(path):
    """The plain route: a tf.function reading the variables, through tf2onnx."""
    import keras
    import tensorflow as tf
    import tf2onnx
    from tf2onnx import optimizer, tf_loader

    import keras_vgg

    stages = []

    def record(stage):
        stages.append({"stage": stage, "rss_bytes": _vm("VmRSS"), "peak_bytes": _vm("VmHWM")})

    def wrap(module, name):
        original = getattr(module, name)

        def wrapped(*args, **kwargs):
            value = original(*args, **kwargs)
            record(name)
            return value
        setattr(module, name, wrapped)

    # Module-level names as tf2onnx.convert looks them up.
    wrap(tf_loader, "from_function")
    wrap(tf2onnx.convert, "process_tf_graph")
    wrap(optimizer, "optimize_graph")
    if FLAGS.naive_gc:
        import copy
        import gc
        import types

        # optimize_graph deep-copies the graph before each pass; the old copy
        # (nodes and graph refer to each other) waits for the cycle collector.
        def deepcopy(value):
            gc.collect()
            return copy.deepcopy(value)
        optimizer.copy = types.SimpleNamespace(deepcopy=deepcopy)
    dense = keras_vgg.fully_convolutional(keras.saving.load_model(path, compile=False))
    record("loaded")
    spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
    function = tf.function(lambda images: dense(images, training=False), input_signature=[spec])
    start = time.monotonic()
    tf2onnx.convert.from_function(function, input_signature=[spec], opset=17)
    record("make_model")
    return {"wall_s": round(time.monotonic() - start, 1), "peak_rss_bytes": _peak_rss(),
            "stages": stages}


def _child(args):
    from keras_vgg.export import export_vgg  # no TensorFlow import at module level

    # The environment the command line sets for itself.
    env = dict(os.environ, PYTHONPATH=_REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2", **export_vgg.PROCESS_ENV)
    done = subprocess.run([sys.executable, os.path.abspath(__file__), *args,
                           f"--fc_units={FLAGS.fc_units}", f"--naive_gc={FLAGS.naive_gc}"],
                          env=env, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stderr[-5000:])
        raise RuntimeError(f"Child {args} failed with exit status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv):
    del argv
    if FLAGS.child:
        depth = int(FLAGS.depths[0])
        result = {"build": lambda: _build(depth, FLAGS.model),
                  "export": lambda: _export(FLAGS.model, FLAGS.format),
                  "naive": lambda: _naive(FLAGS.model)}[FLAGS.child]()
        print(json.dumps(result))
        return
    if FLAGS.naive and FLAGS.fc_units > 512:
        raise app.UsageError("--naive on a head wider than 512 takes over 8 GiB; "
                             f"received --fc_units={FLAGS.fc_units}.")
    json_path = FLAGS.json or os.path.join(
        _REPO, "benchmarks", "results",
        "export_cpu" + ("_naive" if FLAGS.naive else "") + ("_gc" if FLAGS.naive_gc else "")
        + ".json")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for depth in FLAGS.depths:
            path = os.path.join(tmp, f"vgg{depth}.keras")
            built = _child(["--child=build", f"--depths={depth}", f"--model={path}"])
            for fmt in (["naive_onnx"] if FLAGS.naive else FLAGS.formats):
                if FLAGS.naive:
                    result = _child(["--child=naive", f"--depths={depth}", f"--model={path}"])
                else:
                    result = _child(["--child=export", f"--depths={depth}",
                                     f"--model={path}", f"--format={fmt}"])
                row = {"model": f"VGG-{depth}", "fc_units": FLAGS.fc_units, "format": fmt,
                       **built, **result}
                rows.append(row)
                print(f"VGG-{depth:<3} {fmt:<12} weights {row['weights_bytes'] / GiB:5.2f} GiB  "
                      f"peak RSS {row['peak_rss_bytes'] / GiB:5.2f} GiB  "
                      f"wall {row['wall_s']:6.1f} s", flush=True)
                for stage in row.get("stages", []):
                    print(f"    after {stage['stage']:<17} RSS {stage['rss_bytes'] / GiB:5.2f} GiB"
                          f"  peak {stage['peak_bytes'] / GiB:5.2f} GiB")
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    with open(json_path, "w") as f:
            json.dump({"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                   "python": platform.python_version()},
                       "results": rows}, f, indent=1)
    print()
    print("| model | format | weights (GiB) | peak RSS (GiB) | wall (s) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['format']} | {row['weights_bytes'] / GiB:.2f} | "
              f"{row['peak_rss_bytes'] / GiB:.2f} | {row['wall_s']:.1f} |")


if __name__ == "__main__":
    sys.path.insert(0, _REPO)  # `from export import ...` without installing
    app.run(main)
