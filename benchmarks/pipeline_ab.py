"""The training input pipeline at a git revision vs the working tree, in one
process, interleaved, on one thread: what a change to `keras_vgg/recipes/data.py` bought.

    python benchmarks/pipeline_ab.py 504751c~1          # before the window crop
    python benchmarks/pipeline_ab.py HEAD --rounds 5

Both `train_pipeline`s run on the same in-memory ~500x375 JPEGs as
`run.py`'s pipeline part (`cases_pipeline.make_jpegs`); each round times the old one,
then the new one, then each step of the new one alone. Writes
`benchmarks/results/pipeline_ab.json` (`--out`).
"""

import argparse
import atexit
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import cases_pipeline as cases  # noqa: E402


# The pipeline's file, now and before it moved into the package.
DATA_PATHS = ("keras_vgg/recipes/data.py", "recipes/data.py")


def module_at(revision, paths=DATA_PATHS):
    """The pipeline's module as it was at `revision` (at the first of `paths`
    that exists there), imported as a module of its own."""
    for path in paths:
        shown = subprocess.run(["git", "-C", ROOT, "show", f"{revision}:{path}"],
                               capture_output=True, text=True)
        if shown.returncode == 0:
            break
    else:
        raise SystemExit(f"No {' or '.join(paths)} at revision {revision}.")
    source = shown.stdout
    fd, file = tempfile.mkstemp(suffix=".py", prefix="data_at_")
    with os.fdopen(fd, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(f"data_at_{revision}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    atexit.register(os.unlink, file)  # tf.data's autograph reads the source
    return module


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("revision", help="git revision of the old input pipeline")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--images", type=int, default=128, help="distinct JPEGs")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                 "pipeline_ab.json"))
    args = p.parse_args(argv)

    import numpy as np
    import tensorflow as tf
    import keras_vgg.recipes.data as new
    old = module_at(args.revision)
    with tempfile.TemporaryDirectory() as tmp:
        encoded = [open(f, "rb").read() for f in cases.make_jpegs(tmp, args.images)]
    examples = tf.data.Dataset.from_tensor_slices(
        (encoded, np.zeros(len(encoded), "int64"))).cache()

    def rate(data):
        ds = cases.recipes_train_dataset(data, examples, len(encoded), 32, 224)
        return cases._time_dataset(cases._limit_threads(ds, 1), 256, 2, 3)["median"]

    # Where the tree's pipeline spends a core's time: each step alone, at
    # S = 384 (the middle of [256, 512]); ms per image, one thread.
    seed = tf.constant([1, 2], tf.int64)
    photos = examples.map(lambda e, _: e)
    stages = {
        "decode whole image": lambda e: new.decode(e),
        "crop (window decode + resize)": lambda e: new.crop(e, 384, 224, seed),
        "augment (crop + flip, colour, mean, BGR)":
            lambda e: new.augment(e, seed, 224, (384, 384)),
    }

    def ms_per_image(fn):
        ds = photos.map(fn, num_parallel_calls=tf.data.AUTOTUNE).batch(32)
        return 1e3 / cases._time_dataset(cases._limit_threads(ds, 1), 256, 2, 3)["median"]

    samples = {"old": [], "new": []}
    stage_samples = {k: [] for k in stages}
    for r in range(args.rounds):
        for name, data in (("old", old), ("new", new)):
            samples[name].append(rate(data))
        for k, fn in stages.items():
            stage_samples[k].append(ms_per_image(fn))
        print(f"round {r + 1}/{args.rounds}: old {samples['old'][-1]:.1f}, "
              f"new {samples['new'][-1]:.1f} images/s; " + ", ".join(
                  f"{k} {v[-1]:.2f} ms" for k, v in stage_samples.items()), flush=True)
    result = {"command": "python benchmarks/pipeline_ab.py " + " ".join(
                  sys.argv[1:] if argv is None else argv),
              "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
              "old_revision": args.revision,
              "old_commit": subprocess.run(["git", "-C", ROOT, "rev-parse", args.revision],
                                           capture_output=True, text=True).stdout.strip(),
              "threads": 1, "load_average": os.getloadavg(),
              "images_per_s": {k: cases.summary(v) for k, v in samples.items()},
              "samples": samples,
              "new_stages_ms_per_image": {k: cases.summary(v)
                                          for k, v in stage_samples.items()}}
    result["speedup"] = (result["images_per_s"]["new"]["median"]
                         / result["images_per_s"]["old"]["median"])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"old {result['images_per_s']['old']['median']:.1f}, new "
          f"{result['images_per_s']['new']['median']:.1f} images/s per core: "
          f"{result['speedup']:.2f}x -> {args.out}")


if __name__ == "__main__":
    main()
