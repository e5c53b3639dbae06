"""Input pipelines of the paper (sections 3.1 and 3.2) as `tf.data`.

The splits come from `keras_vgg.recipes.sources` (TFDS or a folder) as
encoded images and labels; decoding happens here, after shuffling, so
shuffle buffers hold compressed bytes.

Training augmentation, per image: isotropic rescale so the smallest side is S
(fixed, or drawn uniformly from [S_min, S_max]: "scale jittering"), a random
crop, a random horizontal flip, AlexNet's PCA colour shift, then subtraction
of the mean RGB. Every random draw is a stateless op seeded by
(seed, epoch, position in the epoch), so an epoch's batches are the same
whenever it runs, including after a restart.

Model inputs follow `keras_vgg.preprocess_input` ("caffe" mode: BGR order,
mean subtracted), so models trained here and the pretrained ImageNet weights
take the same inputs.
"""

import numpy as np
import tensorflow as tf

from keras_vgg.recipes.sources import DataError

# Mean RGB of the ILSVRC-2012 training set (keras_vgg.IMAGENET_MEAN_BGR reversed).
IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)

# AlexNet's PCA lighting noise (Krizhevsky et al. 2012, section 4.1): the
# eigenvalues and eigenvectors (columns) of the 3x3 covariance of ImageNet's
# RGB pixels, for pixel values in [0, 1] (as published with fb.resnet.torch);
# scaled to [0, 255] below.
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
              (-0.5808, -0.0045, -0.8140),
              (-0.5836, -0.6948, 0.4203))
PCA_STDDEV = 0.1  # AlexNet's standard deviation of the random coefficients

_EPOCH_STRIDE = 1 << 32  # seed space per epoch: more than any epoch's images
_DCT = "INTEGER_ACCURATE"  # libjpeg's default, as in PIL and OpenCV
# A permutation (no tensor at import: TF's devices must stay unconfigured).
_RGB_TO_BGR = ((0., 0., 1.), (0., 1., 0.), (1., 0., 0.))


# --------------------------------------------------------------------------
# Image operations (one image, HxWx3)


def decode(encoded):
    """Encoded JPEG/PNG/BMP/GIF bytes -> float32 RGB image, values in [0, 255].

    JPEGs are decoded with libjpeg's accurate integer DCT, as PIL and OpenCV
    do (TF's default DCT differs by up to ~20 levels on real photos); the
    exported model's `serve_image_bytes` decodes with this same function.
    """
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method=_DCT),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False))
    return tf.cast(tf.ensure_shape(image, [None, None, 3]), tf.float32)


def crop(encoded, smallest_side, size, seed=None):
    """A `size x size` crop of the image rescaled so its smallest side is
    `smallest_side`: at a random position (`seed`, stateless) or the centre.

    Equivalent to `rescale` then cropping, but only the crop's window of the
    original image is decoded (JPEGs: `decode_and_crop_jpeg`) and resized,
    so the cost no longer grows with S^2: the training pipeline runs 2.9x
    faster per core at the paper's S in [256, 512] than it did rescaling
    whole images (`python benchmarks/pipeline_ab.py 504751c~1`). The window's
    position and side are rounded to whole pixels of the original image.

    Returns:
        float32 RGB, values in [0, 255], shape `(size, size, 3)`.
    """
    def window(shape):
        """(offset, side) of the crop's window in an image of `shape`."""
        short = tf.reduce_min(shape)
        # The crop's side in original pixels: size / (smallest_side / short).
        side = tf.cast(tf.round(tf.cast(size * short, tf.float32)
                                / tf.cast(smallest_side, tf.float32)), tf.int32)
        side = tf.clip_by_value(side, 1, short)
        room = shape - side                       # free (rows, columns)
        if seed is None:
            return room // 2, side
        u = tf.random.stateless_uniform([2], seed)
        return tf.minimum(tf.cast(u * tf.cast(room + 1, tf.float32), tf.int32),
                          room), side

    def jpeg():  # the header gives the shape; only the window is decoded
        offset, side = window(tf.image.extract_jpeg_shape(encoded)[:2])
        return tf.cast(tf.image.decode_and_crop_jpeg(
            encoded, tf.concat([offset, [side, side]], axis=0), channels=3,
            dct_method=_DCT), tf.float32)

    def other():  # PNG/BMP/GIF: decoded whole, once, then cut
        image = decode(encoded)
        offset, side = window(tf.shape(image)[:2])
        return image[offset[0]:offset[0] + side, offset[1]:offset[1] + side]

    image = tf.ensure_shape(tf.cond(tf.io.is_jpeg(encoded), jpeg, other),
                            [None, None, 3])
    # Antialiasing only matters when shrinking; enlarging, the antialiased
    # kernel is plain bilinear, which tf.image computes faster without it.
    image = tf.cond(tf.shape(image)[0] > size,
                    lambda: tf.image.resize(image, [size, size], antialias=True),
                    lambda: tf.image.resize(image, [size, size]))
    return tf.ensure_shape(image, [size, size, 3])


def rescale(image, smallest_side):
    """Isotropic rescale so that the smallest side is `smallest_side`."""
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    s = tf.cast(smallest_side, tf.float32)
    ratio = s / tf.minimum(h, w)
    # The smallest side is exactly S; the other keeps the aspect ratio.
    new_h = tf.where(h <= w, s, tf.round(h * ratio))
    new_w = tf.where(h <= w, tf.round(w * ratio), s)
    size = tf.cast(tf.stack([new_h, new_w]), tf.int32)
    return tf.image.resize(image, size, method="bilinear", antialias=True)


def sample_scale(scale, seed):
    """S: the fixed scale, or an integer drawn uniformly from [S_min, S_max]."""
    low, high = scale
    if low == high:
        return tf.constant(low, tf.int32)
    return tf.random.stateless_uniform([], seed, minval=low, maxval=high + 1,
                                       dtype=tf.int32)


def pca_shift(seed, stddev=PCA_STDDEV):
    """AlexNet's colour shift: one RGB offset `V (alpha * lambda)` per image.

    alpha ~ N(0, stddev^2) per principal component; lambda and V are
    ImageNet's RGB eigenvalues and eigenvectors, on the 0-255 scale.
    """
    alpha = tf.random.stateless_normal([3], seed, stddev=stddev)
    eigval = tf.constant(PCA_EIGVAL, tf.float32) * 255.0
    eigvec = tf.constant(PCA_EIGVEC, tf.float32)
    return tf.linalg.matvec(eigvec, alpha * eigval)


def normalize(image, mean_rgb=IMAGENET_MEAN_RGB):
    """RGB in [0, 255] -> model input: mean RGB subtracted, BGR channel order.

    With the ImageNet mean this equals `keras_vgg.preprocess_input`.
    """
    # On (pixels, 3): broadcasting over a trailing axis of 3 and reversing it
    # are slow element-wise paths in TF's CPU kernels; a permutation matmul
    # and one row broadcast are faster, and exact.
    pixels = tf.matmul(tf.reshape(image, [-1, 3]), tf.constant(_RGB_TO_BGR))
    bgr_mean = tf.reverse(tf.cast(mean_rgb, tf.float32), [0])
    return tf.reshape(pixels - bgr_mean, tf.shape(image))


def augment(encoded, seed, image_size, scale, mean_rgb=IMAGENET_MEAN_RGB,
            color_shift=True):
    """The paper's training augmentation of one encoded image, normalised.

    Args:
        encoded: JPEG/PNG/BMP/GIF bytes.
        seed: int32/int64 tensor of shape (2,), for stateless random ops.
        image_size: side of the square crop (224 in the paper).
        scale: `(S_min, S_max)`; equal for a fixed S.
        mean_rgb: the mean RGB to subtract (see `normalize`).
        color_shift: add AlexNet's PCA colour shift.

    Returns:
        The model input: an `image_size x image_size` crop of the image
        rescaled to smallest side S, randomly mirrored, colour-shifted,
        mean subtracted, in BGR order.
    """
    seeds = tf.random.experimental.stateless_split(seed, 4)
    image = crop(encoded, sample_scale(scale, seeds[0]), image_size, seeds[1])
    image = tf.image.stateless_random_flip_left_right(image, seeds[2])
    offset = tf.cast(mean_rgb, tf.float32)
    if color_shift:  # adding the shift = subtracting it from the mean: one pass
        offset -= pca_shift(seeds[3])
    return normalize(image, offset)


# --------------------------------------------------------------------------
# Pipelines


def train_pipeline(split, *, global_batch, image_size, scale, mean_rgb, seed,
                   initial_epoch, epochs, steps_per_epoch, color_shift=True,
                   shuffle_buffer=10_000):
    """The training batches of epochs `initial_epoch` ... `epochs - 1`.

    Each epoch is a fresh shuffle (seeded by (seed, epoch)) cut into
    `steps_per_epoch` global batches; a restart from epoch k produces the very
    batches the interrupted run would have seen from epoch k on.

    Returns:
        A `tf.data.Dataset` of `(images, labels)` batches, prefetched.
    """
    decode_map = tf.data.AUTOTUNE

    def one_epoch(epoch):
        ds = split.examples.shuffle(min(shuffle_buffer, split.size),
                                    seed=seed * 1_000_003 + epoch,
                                    reshuffle_each_iteration=False)
        ds = ds.enumerate()

        def prepare(index, example):
            encoded, label = example
            op_seed = tf.stack([tf.cast(seed, tf.int64),
                                epoch * _EPOCH_STRIDE + index])
            return augment(encoded, op_seed, image_size, scale, mean_rgb,
                           color_shift), label

        ds = ds.map(prepare, num_parallel_calls=decode_map, deterministic=True)
        return ds.batch(global_batch, drop_remainder=True).take(steps_per_epoch)

    # One dataset per epoch, concatenated: tf.data shuffles take Python seeds.
    ds = one_epoch(initial_epoch)
    for epoch in range(initial_epoch + 1, epochs):
        ds = ds.concatenate(one_epoch(epoch))
    return with_options(ds).prefetch(tf.data.AUTOTUNE)


def eval_pipeline(split, *, batch_size, image_size, smallest_side, mean_rgb):
    """Validation batches: rescale to Q, take the central crop (the paper's
    single-crop evaluation)."""

    def prepare(encoded, label):
        return normalize(crop(encoded, smallest_side, image_size), mean_rgb), label

    ds = split.examples.map(prepare, num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True)
    return with_options(ds.batch(batch_size)).prefetch(tf.data.AUTOTUNE)


def with_options(ds):
    options = tf.data.Options()
    options.deterministic = True
    # Each worker reads everything and keeps its share of every batch: works
    # for any source (file shards or in-memory lists) and keeps the order.
    options.experimental_distribute.auto_shard_policy = \
        tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def mean_rgb_of(split, max_images=10_000):
    """Mean RGB of a split's first `max_images` images (the paper subtracts
    the training set's mean RGB)."""
    ds = split.examples.take(max_images).map(
        lambda encoded, _: tf.reduce_mean(decode(encoded), axis=[0, 1]),
        num_parallel_calls=tf.data.AUTOTUNE)
    total, count = np.zeros(3, np.float64), 0
    for means in ds.batch(1024).as_numpy_iterator():
        total += means.sum(0)
        count += len(means)
    if not count:
        raise DataError(f"Split {split.name!r} is empty.")
    return tuple(float(round(v, 3)) for v in total / count)


def parse_mean_rgb(value, train_split=None):
    """`imagenet`, `dataset` (computed from `train_split`) or `R,G,B`."""
    if value == "imagenet":
        return IMAGENET_MEAN_RGB
    if value == "dataset":
        return mean_rgb_of(train_split)
    parts = value.split(",")
    try:
        rgb = tuple(float(p) for p in parts)
    except ValueError:
        rgb = ()
    if len(rgb) != 3:
        raise ValueError(f"--mean_rgb must be 'imagenet', 'dataset' or three "
                         f"numbers 'R,G,B'. Received: {value!r}")
    return rgb
