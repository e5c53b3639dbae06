"""A frozen network's outputs, computed once per image and kept on disk.

Transfer with a frozen base spends almost all its time in the base; its
output does not change while the head trains, so it is computed once per
image (with a progress bar and the time left), written to the cache, and
every epoch, and every later run with the same source weights, data and
preprocessing, reads it back instead. A cache entry is a folder
`<split>-<key>/` holding `features.npy` (memory-mapped when read) and
`labels.npy`; `key` hashes everything the outputs depend on, and the folder
is renamed into place only when complete, so a killed run never leaves a
torn entry behind.
"""

import hashlib
import json
import os
import pathlib
import shutil
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_vgg.recipes import data as data_lib


def split_model(classifier, cut="block5_pool"):
    """`(base, head)`: the classifier split after layer `cut`.

    Both share the classifier's layers (and weights): training `head` trains
    the classifier's head. `base` maps images to `cut`'s output, `head` maps
    that output to the classifier's.
    """
    names = [layer.name for layer in classifier.layers]
    if cut not in names:
        raise ValueError(f"No layer {cut!r} in model {classifier.name!r}.")
    base = keras.Model(classifier.input, classifier.get_layer(cut).output,
                       name=f"{classifier.name}_base")
    inputs = keras.Input(tuple(base.output.shape[1:]), name=f"{cut}_features")
    x = inputs
    for layer in classifier.layers[names.index(cut) + 1:]:
        x = layer(x)
    return base, keras.Model(inputs, x, name=f"{classifier.name}_head")


def cache_key(**parts):
    """A short hash of what a cache entry depends on (JSON-able values)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(cache_dir, split, key, batches, what="features", verbose=1):
    """The arrays `batches()` computes for every image of `split`, from the
    cache when there, else computed now and stored.

    Args:
        cache_dir: the cache's folder.
        split: the `Split` the arrays are computed from (its `size` images).
        key: from `cache_key`, covering everything but the split.
        batches: a function returning an iterator of `(indices, outputs,
            labels)`: the positions in the split of a batch's images, their
            outputs and labels.
        what: what is computed, for the log and the progress bar.
        verbose: 1 shows a progress bar with the time left.

    Returns:
        `(outputs, labels)`: `outputs` a read-only memory-mapped array
        `(split.size, ...)`, `labels` an array.
    """
    folder = pathlib.Path(cache_dir) / f"{split.name}-{cache_key(key=key, split=split.fingerprint)}"
    if (folder / "labels.npy").exists():
        _log(f"Cached {what} of {split.size} {split.name} images: {folder}")
        return np.load(folder / "features.npy", mmap_mode="r"), np.load(folder / "labels.npy")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-",
                                            dir=folder.parent))
    try:
        _log(f"Computing {what} of {split.size} {split.name} images once, "
             f"into {folder}")
        bar = keras.utils.Progbar(split.size, unit_name="image",
                                  interval=0.05 if sys.stdout.isatty() else 30) \
            if verbose else None
        outputs, labels, seen = None, None, 0
        for indices, out, lab in batches():
            indices, out, lab = np.asarray(indices), np.asarray(out), np.asarray(lab)
            if outputs is None:
                outputs = np.lib.format.open_memmap(
                    staging / "features.npy", mode="w+", dtype=np.float32,
                    shape=(split.size, *out.shape[1:]))
                labels = np.zeros((split.size, *lab.shape[1:]), lab.dtype)
            if indices.size and indices.max() >= split.size:
                raise ValueError(f"Split {split.name!r} holds more than its "
                                 f"stated {split.size} images.")
            outputs[indices], labels[indices] = out, lab
            seen += len(indices)
            if bar is not None:
                bar.update(seen)
        if seen != split.size:
            raise ValueError(f"Split {split.name!r} gave {seen} images, not its "
                             f"stated {split.size}.")
        outputs.flush()
        del outputs
        np.save(staging / "labels.npy", labels)
        (staging / "key.json").write_text(json.dumps(
            {"key": key, "split": split.fingerprint}, default=str, indent=1) + "\n")
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return np.load(folder / "features.npy", mmap_mode="r"), np.load(folder / "labels.npy")


def base_outputs(base, split, *, image_size, smallest_side, mean_rgb, batch_size):
    """`batches` for `cached`: `base` on the central `image_size` crop of
    each image rescaled to `smallest_side` (evaluation's single crop)."""
    def batches():
        predict = _predictor(base)
        ds = data_lib.eval_pipeline(split, batch_size=batch_size,
                                    image_size=image_size,
                                    smallest_side=smallest_side, mean_rgb=mean_rgb)
        start = 0
        for x, y in ds:
            out = predict(x).numpy()
            yield np.arange(start, start + len(out)), out, y.numpy()
            start += len(out)
    return batches


def _predictor(model):
    @tf.function(reduce_retracing=True)
    def predict(x):
        return tf.cast(model(x, training=False), tf.float32)
    return predict


def training_batches(outputs, labels, *, batch_size, seed, initial_epoch, epochs,
                     steps_per_epoch):
    """Cached outputs as training batches: epoch `e` is the permutation drawn
    from `(seed, e)`, cut into `steps_per_epoch` batches, so a resumed run
    reads exactly the batches the uninterrupted one would have.

    Returns:
        A `tf.data.Dataset` of `(outputs, labels)` batches for epochs
        `initial_epoch` ... `epochs - 1`.
    """
    n = len(labels)
    if steps_per_epoch * batch_size > n:
        raise ValueError(f"{steps_per_epoch} batches of {batch_size} need "
                         f"{steps_per_epoch * batch_size} images; there are {n}.")

    def fetch(epoch, step):
        order = np.random.default_rng([seed, int(epoch)]).permutation(n)
        pick = order[int(step) * batch_size:(int(step) + 1) * batch_size]
        sorted_pick = np.sort(pick)  # memory-mapped reads in file order
        rows = np.asarray(outputs[sorted_pick])[np.searchsorted(sorted_pick, pick)]
        return rows.astype(np.float32), labels[pick]

    def one(epoch, step):
        x, y = tf.numpy_function(fetch, [epoch, step],
                                 [tf.float32, tf.as_dtype(labels.dtype)])
        return (tf.ensure_shape(x, [batch_size, *outputs.shape[1:]]),
                tf.ensure_shape(y, [batch_size, *labels.shape[1:]]))

    ds = tf.data.Dataset.range(initial_epoch, epochs).flat_map(
        lambda epoch: tf.data.Dataset.range(steps_per_epoch).map(
            lambda step: (epoch, step)))
    ds = ds.map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return data_lib.with_options(ds).prefetch(tf.data.AUTOTUNE)


def in_order(outputs, labels, batch_size):
    """Cached outputs in their order, as `(outputs, labels)` batches (the
    last one smaller): for evaluation."""
    n = len(labels)

    def fetch(step):
        rows = slice(int(step) * batch_size, min(n, (int(step) + 1) * batch_size))
        return np.asarray(outputs[rows], np.float32), labels[rows]

    def one(step):
        x, y = tf.numpy_function(fetch, [step], [tf.float32, tf.as_dtype(labels.dtype)])
        return (tf.ensure_shape(x, [None, *outputs.shape[1:]]),
                tf.ensure_shape(y, [None, *labels.shape[1:]]))

    ds = tf.data.Dataset.range(-(-n // batch_size)).map(one)
    return data_lib.with_options(ds).prefetch(tf.data.AUTOTUNE)


def _log(msg):
    print(msg, flush=True)
