"""Benchmark case of the training input pipeline
(`keras_vgg.recipes.data.train_pipeline`), beside a plainly written
reference pipeline, on real JPEGs of ImageNet size. Run by `cases.py` in a
fresh interpreter, like every case; `pipeline_ab.py` reuses its pieces.
"""

import importlib
import os
import shutil
import tempfile
import time

from benchmarks.measure import (
    error_entry, summary)

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
    missing = [n for n in ("train_pipeline", "IMAGENET_MEAN_RGB")
               if not hasattr(data, n)]
    if missing:
        return None, f"not available yet: recipes.data has no {', '.join(missing)}"
    return (lambda: recipes_train_dataset(data, examples, size, params["pipeline_batch_size"],
                                          params["crop_size"]),
            "recipes.data.train_pipeline (scale=(256, 512), colour shift)")


def recipes_train_dataset(data, examples, size, batch_size, crop_size):
    """One epoch of `data.train_pipeline` (a `recipes.data` module, of this
    tree or of another revision) at the paper's S in [256, 512]."""
    # `Split` moved from recipes.data to recipes.sources; old revisions have it.
    split_class = getattr(data, "Split", None) or \
        importlib.import_module("keras_vgg.recipes.sources").Split
    return data.train_pipeline(
        split_class("train", examples, size), global_batch=batch_size,
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
