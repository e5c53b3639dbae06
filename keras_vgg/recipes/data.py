"""Input pipelines of the paper (sections 3.1 and 3.2) as `tf.data`.

Sources: any TensorFlow Datasets image classification dataset (ImageNet is
`imagenet2012`, prepared by TFDS from the tar files the user downloaded) or a
folder of class subfolders (`folder:/path`). Both yield encoded images and
integer labels; decoding happens after shuffling, so shuffle buffers hold
compressed bytes.

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

import dataclasses
import pathlib

import numpy as np
import tensorflow as tf

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

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
_EPOCH_STRIDE = 1 << 32  # seed space per epoch: more than any epoch's images
_DCT = "INTEGER_ACCURATE"  # libjpeg's default, as in PIL and OpenCV
# A permutation (no tensor at import: TF's devices must stay unconfigured).
_RGB_TO_BGR = ((0., 0., 1.), (0., 1., 0.), (1., 0., 0.))


class DataError(Exception):
    """A dataset is missing or malformed; the message says what to do."""


@dataclasses.dataclass
class Split:
    """One split: a dataset of `(encoded image bytes, int64 label)`."""

    name: str
    examples: tf.data.Dataset
    size: int


@dataclasses.dataclass
class Source:
    """A dataset's train and validation splits and its classes."""

    name: str
    train: Split
    val: Split
    class_names: list

    @property
    def num_classes(self):
        return len(self.class_names)


# --------------------------------------------------------------------------
# Sources


def load_source(dataset, data_dir=None, manual_dir=None, train_split="train",
                val_split=None, download=True):
    """Opens a dataset: `folder:/path` or a TFDS name (e.g. `imagenet2012`).

    Args:
        dataset: `"folder:/path"` or a TFDS dataset name, optionally with a
            config/version (`"cifar10"`, `"imagenet2012:5.1.0"`).
        data_dir: TFDS data directory (TFDS' default when `None`).
        manual_dir: where the manually downloaded files are (ImageNet's tars).
        train_split: the training split, TFDS slicing allowed (`train[:90%]`).
        val_split: the validation split; `None` picks `validation`, else
            `test`. For folders, the subfolder (default `val`/`validation`).
        download: let TFDS download and prepare a missing dataset.

    Returns:
        A `Source`.

    Raises:
        DataError: the dataset is missing or malformed; the message says how
            to prepare it.
    """
    if dataset.startswith("folder:"):
        return load_folder(dataset[len("folder:"):], val_split)
    return load_tfds(dataset, data_dir, manual_dir, train_split, val_split,
                     download)


def load_folder(root, val_split=None):
    """A folder of images in class subfolders.

    Either `root/train/<class>/*.png` with `root/val/<class>/...` (or
    `validation/`, or the subfolder named by `val_split`), or just
    `root/<class>/...`, in which case every 10th image of each class (by
    sorted file name) is held out for validation.
    """
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"Dataset folder {str(root)!r} does not exist. Expected class "
            "subfolders of images, either directly in it or under train/ and "
            "val/ (e.g. --dataset=folder:/data/flowers with "
            "/data/flowers/train/daisy/1.jpg).")
    val_names = [val_split] if val_split else ["val", "validation"]
    val_dir = next((root / n for n in val_names if (root / n).is_dir()), None)
    if (root / "train").is_dir() and val_dir is not None:
        class_names = _class_dirs(root / "train")
        train = _list_images(root / "train", class_names)
        val = _list_images(val_dir, class_names)
    else:
        if val_split:
            raise DataError(f"Dataset folder {str(root)!r} has no subfolder "
                            f"{val_split!r} (from --val_split).")
        class_names = _class_dirs(root)
        files = _list_images(root, class_names)
        held_out = [i % 10 == 9 for i in range(len(files))]
        train = [f for f, h in zip(files, held_out) if not h]
        val = [f for f, h in zip(files, held_out) if h]
    if not train or not val:
        raise DataError(f"Dataset folder {str(root)!r} has no images for "
                        f"{'training' if not train else 'validation'}.")
    return Source(f"folder:{root}", _file_split("train", train),
                  _file_split(val_dir.name if val_dir else "val", val),
                  class_names)


def _class_dirs(root):
    names = sorted(p.name for p in root.iterdir()
                   if p.is_dir() and not p.name.startswith("."))
    if len(names) < 2:
        raise DataError(f"Dataset folder {str(root)!r} must hold one subfolder "
                        f"per class (at least 2). Found: {names}")
    return names


def _list_images(root, class_names):
    files = []
    for label, name in enumerate(class_names):
        folder = root / name
        if not folder.is_dir():
            raise DataError(f"Class {name!r} has no folder in {str(root)!r}.")
        files += [(str(p), label) for p in sorted(folder.rglob("*"))
                  if p.suffix.lower() in IMAGE_EXTENSIONS]
    return files


def _file_split(name, files):
    paths = tf.constant([f for f, _ in files])
    labels = tf.constant([label for _, label in files], tf.int64)
    examples = tf.data.Dataset.from_tensor_slices((paths, labels)).map(
        lambda path, label: (tf.io.read_file(path), label),
        num_parallel_calls=tf.data.AUTOTUNE)
    return Split(name, examples, len(files))


def imagenet_instructions(data_dir, manual_dir):
    """What to do when ImageNet is not prepared."""
    data_dir = data_dir or "~/tensorflow_datasets"
    return (
        f"ImageNet (TFDS 'imagenet2012') is not prepared in {data_dir}.\n"
        "To prepare it (once; about 155 GB of tars, 150 GB once prepared):\n"
        "  1. Register at https://image-net.org/download-images and download\n"
        "     ILSVRC2012_img_train.tar (138 GB) and ILSVRC2012_img_val.tar\n"
        "     (6.3 GB) into one folder, e.g. ~/imagenet_tars.\n"
        "  2. Run the recipe with --manual_dir=~/imagenet_tars (and "
        f"--data_dir={data_dir});\n"
        "     TFDS extracts and converts them on the first run, or beforehand:\n"
        "     tfds build imagenet2012 --manual_dir=~/imagenet_tars "
        f"--data_dir={data_dir}\n"
        "No ImageNet at hand? `python recipes/train_imagenet.py --smoke` runs "
        "the whole recipe offline on a small dataset that scikit-learn ships."
        + (f"\n(--manual_dir={manual_dir} did not contain the two tars.)"
           if manual_dir else ""))


def load_tfds(name, data_dir=None, manual_dir=None, train_split="train",
              val_split=None, download=True):
    """A TFDS image classification dataset, prepared if needed and possible."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # DatasetNotFoundError and friends
        raise DataError(
            f"TFDS has no dataset {name!r} ({type(e).__name__}: "
            f"{str(e).splitlines()[0]}). Use a TFDS image classification "
            "dataset name (e.g. imagenet2012, cifar10, oxford_flowers102) or "
            "--dataset=folder:/path/to/class/subfolders.") from None
    is_imagenet = builder.name == "imagenet2012"
    if not builder.is_prepared():
        manual = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
        if manual and not manual_dir:
            if is_imagenet:
                raise DataError(imagenet_instructions(data_dir, manual_dir))
            raise DataError(
                f"TFDS dataset {name!r} is not prepared in "
                f"{builder.data_dir_root} and needs files you download "
                f"yourself; pass their folder as --manual_dir. TFDS says:\n"
                f"{manual.strip()}")
        if not download and not manual_dir:
            raise DataError(
                f"TFDS dataset {name!r} is not prepared in "
                f"{builder.data_dir_root}, and --nodownload forbids fetching "
                f"it. Prepare it with `tfds build {name} --data_dir=...`.")
        try:
            config = tfds.download.DownloadConfig(manual_dir=manual_dir)
            builder.download_and_prepare(download_config=config)
        except Exception as e:
            if is_imagenet:
                raise DataError(imagenet_instructions(data_dir, manual_dir)
                                + f"\nTFDS said: {e}") from None
            raise DataError(
                f"Could not download and prepare TFDS dataset {name!r} into "
                f"{builder.data_dir_root} ({type(e).__name__}: {e}). Without "
                f"network access, run `tfds build {name} --data_dir=DIR` on a "
                "connected machine, copy DIR here and pass --data_dir=DIR."
            ) from None
    info = builder.info
    if not info.supervised_keys or len(info.supervised_keys) != 2:
        raise DataError(f"TFDS dataset {name!r} has no (image, label) "
                        "supervised keys; it is not image classification.")
    image_key, label_key = info.supervised_keys
    label = info.features[label_key]
    if not isinstance(info.features[image_key], tfds.features.Image) or \
            not hasattr(label, "num_classes"):
        raise DataError(f"TFDS dataset {name!r} is not image classification "
                        f"(features {image_key!r}, {label_key!r}).")
    if val_split is None:
        val_split = next((s for s in ("validation", "test") if s in info.splits),
                         None)
        if val_split is None:
            raise DataError(
                f"TFDS dataset {name!r} has no 'validation' or 'test' split "
                f"(splits: {list(info.splits)}); hold some out with e.g. "
                "--train_split='train[:90%]' --val_split='train[90%:]'.")

    def split(s):
        try:
            size = info.splits[s].num_examples
        except (KeyError, ValueError) as e:
            raise DataError(f"TFDS dataset {name!r} has no split {s!r} "
                            f"({e}). Splits: {list(info.splits)}") from None
        ds = builder.as_dataset(
            split=s, shuffle_files=False, as_supervised=True,
            # Keep images encoded until after shuffling.
            decoders={image_key: tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=16))
        return Split(s, ds, size)

    names = label.names if hasattr(label, "names") else \
        [str(i) for i in range(label.num_classes)]
    return Source(name, split(train_split), split(val_split), list(names))


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
    return _with_options(ds).prefetch(tf.data.AUTOTUNE)


def eval_pipeline(split, *, batch_size, image_size, smallest_side, mean_rgb):
    """Validation batches: rescale to Q, take the central crop (the paper's
    single-crop evaluation)."""

    def prepare(encoded, label):
        return normalize(crop(encoded, smallest_side, image_size), mean_rgb), label

    ds = split.examples.map(prepare, num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True)
    return _with_options(ds.batch(batch_size)).prefetch(tf.data.AUTOTUNE)


def _with_options(ds):
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


# --------------------------------------------------------------------------
# The smoke run's dataset


def digits(upscale=4):
    """scikit-learn's 1,797 handwritten digits as RGB images in [0, 255].

    The digits (UCI, 8x8 grey levels 0-16) ship with scikit-learn, so this
    works offline. Returns `(images, labels)`: float64 images of shape
    `(1797, 8*upscale, 8*upscale, 3)` and integer labels 0-9.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.kron(data.images, np.ones((upscale, upscale))) * (255 / 16)
    return images[..., None].repeat(3, -1), data.target


def write_digits(root, upscale=4):
    """Writes scikit-learn's 1,797 handwritten digits as PNG class folders.

    The digits (UCI, 8x8 grey levels 0-16) ship with scikit-learn, so this
    works offline. Images are upscaled to 8*upscale pixels, RGB, and split
    1/6 to `val/` (every 6th image), the rest to `train/`. Returns `root`.
    """
    from PIL import Image

    root = pathlib.Path(root)
    marker = root / ".complete"
    if marker.exists():
        return root
    images, labels = digits(upscale)
    images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    for i, (image, label) in enumerate(zip(images, labels)):
        split = "val" if i % 6 == 5 else "train"
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:04d}.png")
    marker.touch()
    return root
