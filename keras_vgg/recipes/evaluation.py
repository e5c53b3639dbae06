r"""The paper's testing protocols (sections 3.2 and 4) for trained VGG models.

The library behind `recipes/evaluate.py` (`keras-vgg-evaluate`):

```
python recipes/evaluate.py --model=vgg16.keras --protocol=dense --scales=256,384,512
python recipes/evaluate.py --model=D.keras,E.keras --protocol=dense+multicrop \
    --scales=256,384,512 --output=fusion.json
```

Protocols, each over one or several test scales Q (the smallest image side):

* `single`: the central crop of the image rescaled to Q.
* `dense`: the fully-convolutional network (`keras_vgg.fully_convolutional`)
  over the whole image rescaled to Q and over its horizontal flip; the class
  posteriors are averaged.
* `multicrop`: a 5x5 regular grid of crops, each also flipped: 50 crops per
  scale, posteriors averaged.
* `dense+multicrop`: the average of the two.

Posteriors are averaged over scales, then over models (fusion). Top-1 and
top-5 errors go to a JSON file, with the time each protocol took.

Dense evaluation batches images of the same rescaled size together (ImageNet
has few distinct aspect ratios), so it runs one forward pass per image and
flip instead of 50 crops.
"""

import dataclasses
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import keras_vgg
from keras_vgg.recipes import data as data_lib

PROTOCOLS = ("single", "dense", "multicrop", "dense+multicrop")
GRID = 5  # the paper's 5x5 crops per scale (x2 flips)


class EvaluationError(Exception):
    """A protocol cannot run as asked; the message says why."""


def _crop_size(model):
    shape = model.input.shape
    if shape[1] is None or shape[1] != shape[2]:
        raise EvaluationError(f"Model {model.name!r} needs a square static input "
                              f"size; it has input shape {tuple(shape)}.")
    return int(shape[1])


def _predictor(model):
    @tf.function(reduce_retracing=True)
    def predict(x):
        return tf.cast(model(x, training=False), tf.float32)
    return predict


def _images(split, q, mean_rgb, max_images=0):
    ds = split.examples.take(max_images) if max_images else split.examples
    return ds.map(lambda enc, label: (
        data_lib.normalize(data_lib.rescale(data_lib.decode(enc), q), mean_rgb),
        label), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def single_crop(model, split, q, mean_rgb, batch_size=64, max_images=0,
                progress=None):
    """Posteriors from the central crop at scale Q, shape `(N, classes)`.

    `progress`, if given, is called with the number of images of each batch
    done (as are the other protocols')."""
    size = _crop_size(model)
    predict = _predictor(model)
    examples = split.examples.take(max_images) if max_images else split.examples
    ds = data_lib.eval_pipeline(dataclasses.replace(split, examples=examples),
                                batch_size=batch_size, image_size=size,
                                smallest_side=q, mean_rgb=mean_rgb)
    out = []
    for x, _ in ds:
        out.append(predict(x).numpy())
        _advance(progress, len(out[-1]))
    return np.concatenate(out)


def dense(model, split, q, mean_rgb, batch_size=32, max_images=0, fcn=None,
          progress=None):
    """Dense evaluation at scale Q: the fully-convolutional net on the whole
    image and its flip, posteriors averaged. Shape `(N, classes)`.

    Images with the same rescaled size are batched together (a batch holds
    each image and its flip).
    """
    fcn = fcn or keras_vgg.fully_convolutional(model)
    predict = _predictor(fcn)
    per_batch = max(1, batch_size // 2)
    ds = _images(split, q, mean_rgb, max_images).enumerate()
    ds = ds.group_by_window(
        key_func=lambda i, xy: tf.cast(tf.shape(xy[0])[0], tf.int64) * 100_000
        + tf.cast(tf.shape(xy[0])[1], tf.int64),
        reduce_func=lambda key, window: window.batch(per_batch),
        window_size=per_batch)
    out = {}
    for index, (x, _) in ds.prefetch(2):
        n = x.shape[0]
        p = predict(tf.concat([x, tf.reverse(x, axis=[2])], axis=0)).numpy()
        for i, probs in zip(index.numpy(), (p[:n] + p[n:]) / 2):
            out[int(i)] = probs
        _advance(progress, n)
    return np.stack([out[i] for i in range(len(out))])


def grid_crops(image, size, grid=GRID):
    """The `grid x grid` regular grid of `size` crops and their flips,
    `(2 * grid**2, size, size, 3)`: unflipped row-major, then flipped."""
    shape = tf.shape(image)
    rows = tf.cast(tf.round(tf.linspace(0.0, tf.cast(shape[0] - size, tf.float32),
                                        grid)), tf.int32)
    cols = tf.cast(tf.round(tf.linspace(0.0, tf.cast(shape[1] - size, tf.float32),
                                        grid)), tf.int32)
    crops = tf.stack([image[rows[i]:rows[i] + size, cols[j]:cols[j] + size]
                      for i in range(grid) for j in range(grid)])
    crops = tf.ensure_shape(crops, [grid * grid, size, size, 3])
    return tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)


def multicrop(model, split, q, mean_rgb, batch_size=64, max_images=0,
              progress=None):
    """Multi-crop evaluation at scale Q: 5x5 crops x 2 flips, posteriors
    averaged. Shape `(N, classes)`."""
    size = _crop_size(model)
    predict = _predictor(model)
    crops_per_image = 2 * GRID * GRID
    per_batch = max(1, batch_size // crops_per_image)
    ds = _images(split, q, mean_rgb, max_images).map(
        lambda x, y: grid_crops(x, size)).batch(per_batch)
    out = []
    for crops in ds.prefetch(2):
        n = crops.shape[0]
        p = predict(tf.reshape(crops, [-1, size, size, 3])).numpy()
        out.append(p.reshape(n, crops_per_image, -1).mean(axis=1))
        _advance(progress, n)
    return np.concatenate(out)


def _advance(progress, images):
    if progress is not None:
        progress(images)


_COMPONENTS = {"single": single_crop, "dense": dense, "multicrop": multicrop}


def labels_of(split, max_images=0):
    ds = split.examples.take(max_images) if max_images else split.examples
    return np.concatenate([y for y in ds.map(lambda _, y: y).batch(4096)
                           .as_numpy_iterator()])


def errors(probs, labels, k=5):
    """Top-1 and top-k error (fractions) of posteriors `(N, classes)`."""
    k = min(k, probs.shape[1])
    topk = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    top1 = float(np.mean(topk[:, 0] != labels))
    top5 = float(np.mean(~np.any(topk == labels[:, None], axis=1)))
    return top1, top5


def evaluate_models(models, split, protocols=("dense",), scales=(256,),
                    mean_rgb=data_lib.IMAGENET_MEAN_RGB, batch_size=64,
                    max_images=0, verbose=1):
    """Runs the protocols; posteriors averaged over scales, then models.

    Args:
        models: `keras.Model`s with their classifier (fusion when several).
        split: a `keras_vgg.recipes.data.Split` of encoded images and labels.
        protocols: names from `PROTOCOLS`.
        scales: test scales Q (smallest image side); each must be at least
            the models' input size.
        mean_rgb: the mean RGB the models were trained with; one tuple, or a
            list with one per model.
        batch_size: images per batch (crops per batch for multi-crop).
        max_images: evaluate the first images only (0: all).
        verbose: 1 shows a progress bar with the time left over all passes
            (models x protocols x scales, counted in images), 0 is silent.

    Returns:
        A dict: `images`, `scales`, `models`, and per protocol its `top1_error`
        and `top5_error` (fractions) and `seconds` (summed over models and
        scales; dense+multicrop reuses the other two's posteriors).
    """
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown or not protocols:
        raise EvaluationError(f"Unknown protocol(s) {unknown or list(protocols)}. "
                              f"Allowed: {', '.join(PROTOCOLS)}.")
    means = list(mean_rgb) if mean_rgb and isinstance(mean_rgb[0], (tuple, list)) \
        else [tuple(mean_rgb)] * len(models)
    for model in models:
        size = _crop_size(model)
        small = [q for q in scales if q < size]
        if small:
            raise EvaluationError(
                f"Test scales {small} are smaller than model {model.name!r}'s "
                f"input size {size}; every Q must be at least {size}.")
    components = sorted({c for p in protocols for c in p.split("+")})
    labels = labels_of(split, max_images)
    probs, seconds = {}, {c: 0.0 for c in components}
    passes = len(models) * len(components) * len(scales)
    # Redrawn in place on a terminal; in a log file, a line every 30 s.
    bar = keras.utils.Progbar(passes * len(labels), unit_name="image",
                              interval=0.05 if sys.stdout.isatty() else 30) \
        if verbose else None
    done = [0]

    def progress(images):
        done[0] += images
        bar.update(done[0])

    for m, (model, mean) in enumerate(zip(models, means)):
        fcn = keras_vgg.fully_convolutional(model) if "dense" in components else None
        for c in components:
            for q in scales:
                start = time.perf_counter()
                kwargs = dict(batch_size=batch_size, max_images=max_images,
                              progress=progress if bar else None)
                if c == "dense":
                    kwargs["fcn"] = fcn
                probs[m, c, q] = _COMPONENTS[c](model, split, q, mean, **kwargs)
                seconds[c] += time.perf_counter() - start
    results = {"images": int(len(labels)), "scales": list(scales),
               "models": [model.name for model in models]}
    for p in protocols:
        parts = p.split("+")
        fused = np.mean([np.mean([np.mean([probs[m, c, q] for c in parts], axis=0)
                                  for q in scales], axis=0)
                         for m in range(len(models))], axis=0)
        top1, top5 = errors(fused, labels)
        results[p] = {"top1_error": top1, "top5_error": top5,
                      "seconds": round(sum(seconds[c] for c in parts), 3)}
    if "dense" in seconds and "multicrop" in seconds:
        results["multicrop_over_dense_time"] = round(
            seconds["multicrop"] / max(seconds["dense"], 1e-9), 2)
    return results


def format_results(results):
    """A table in the paper's terms (errors in %)."""
    lines = [f"Evaluation of {', '.join(results['models'])} on "
             f"{results['images']} images, Q = "
             f"{', '.join(str(q) for q in results['scales'])}:",
             f"  {'protocol':<16} {'top-1 err %':>11} {'top-5 err %':>11} "
             f"{'seconds':>8}"]
    for p in PROTOCOLS:
        if p in results:
            r = results[p]
            lines.append(f"  {p:<16} {100 * r['top1_error']:>11.2f} "
                         f"{100 * r['top5_error']:>11.2f} {r['seconds']:>8.2f}")
    if "multicrop_over_dense_time" in results:
        lines.append(f"  multi-crop took {results['multicrop_over_dense_time']}x "
                     "the time of dense evaluation")
    return "\n".join(lines)
