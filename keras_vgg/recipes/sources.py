"""Where a recipe's images come from: TensorFlow Datasets or a folder.

Sources: any TensorFlow Datasets image classification dataset (ImageNet is
`imagenet2012`, prepared by TFDS from the tar files the user downloaded) or a
folder of class subfolders (`folder:/path`). Both yield encoded images and
integer labels, as `Split`s of a `Source`; decoding happens later, in the
pipelines of `keras_vgg.recipes.data`, after shuffling, so shuffle buffers
hold compressed bytes. Also the smoke runs' dataset: scikit-learn's digits.
"""

import dataclasses
import hashlib
import os
import pathlib

import numpy as np
import tensorflow as tf

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


class DataError(Exception):
    """A dataset is missing or malformed; the message says what to do."""


@dataclasses.dataclass
class Split:
    """One split: a dataset of `(encoded image bytes, label)`.

    `fingerprint` names its content (for folders, every file's path, size
    and modification time; for TFDS, the dataset, version and split), so
    caches of what was computed from it know when it changed. Folder splits
    also list their `files`, so unreadable ones can be named and left out
    (`keras_vgg.recipes.screening`).
    """

    name: str
    examples: tf.data.Dataset
    size: int
    fingerprint: str = ""
    files: list = None   # for folders: the (path, label) of each image


@dataclasses.dataclass
class Source:
    """A dataset's train and validation splits and its classes.

    Labels are int64 class indices, or, for multi-label datasets (an image
    may show several classes: PASCAL VOC), float32 multi-hot vectors of
    length `num_classes`.
    """

    name: str
    train: Split
    val: Split
    class_names: list
    multi_label: bool = False

    @property
    def num_classes(self):
        return len(self.class_names)


def load_source(dataset, data_dir=None, manual_dir=None, train_split="train",
                val_split=None, download=True, val_preference=("validation", "test")):
    """Opens a dataset: `folder:/path` or a TFDS name (e.g. `imagenet2012`).

    Args:
        dataset: `"folder:/path"` or a TFDS dataset name, optionally with a
            config/version (`"cifar10"`, `"imagenet2012:5.1.0"`).
        data_dir: TFDS data directory (TFDS' default when `None`).
        manual_dir: where the manually downloaded files are (ImageNet's tars).
        train_split: the training split, TFDS slicing allowed (`train[:90%]`).
        val_split: the validation split; `None` picks the first of
            `val_preference` the dataset has. For folders, the subfolder
            (default `val`/`validation`).
        download: let TFDS download and prepare a missing dataset.
        val_preference: TFDS splits to try for `val_split=None`, in order
            (transfer recipes hold out `test` first).

    Returns:
        A `Source`.

    Raises:
        DataError: the dataset is missing or malformed; the message says how
            to prepare it.
    """
    if dataset.startswith("folder:"):
        return load_folder(dataset[len("folder:"):], val_split)
    return load_tfds(dataset, data_dir, manual_dir, train_split, val_split,
                     download, val_preference)


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
    return Source(f"folder:{root}", file_split("train", train),
                  file_split(val_dir.name if val_dir else "val", val),
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


def file_split(name, files):
    """A `Split` reading `files`, a list of `(path, label)`."""
    paths = tf.constant([f for f, _ in files])
    labels = tf.constant([label for _, label in files], tf.int64)
    examples = tf.data.Dataset.from_tensor_slices((paths, labels)).map(
        lambda path, label: (tf.io.read_file(path), label),
        num_parallel_calls=tf.data.AUTOTUNE)
    digest = hashlib.sha256()
    for path, label in files:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{label}\n".encode())
    return Split(name, examples, len(files), "folder:" + digest.hexdigest()[:16],
                 list(files))


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
              val_split=None, download=True, val_preference=("validation", "test")):
    """A TFDS image classification dataset, prepared if needed and possible.

    Single-label datasets are those with `(image, label)` supervised keys;
    multi-label ones (`voc/2007`, `voc/2012`) have an `image` and a sequence
    of class labels, `labels`, which becomes a multi-hot vector.
    """
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
    image_key, label_key, multi_label = _classification_keys(name, info)
    label = info.features[label_key]
    if multi_label:
        label = label.feature
    if val_split is None:
        val_split = next((s for s in val_preference if s in info.splits), None)
        if val_split is None:
            raise DataError(
                f"TFDS dataset {name!r} has none of the splits "
                f"{list(val_preference)} to hold out (splits: "
                f"{list(info.splits)}); hold some out with e.g. "
                "--train_split='train[:90%]' --val_split='train[90%:]'.")

    def split(s):
        try:
            size = info.splits[s].num_examples
        except (KeyError, ValueError) as e:
            raise DataError(f"TFDS dataset {name!r} has no split {s!r} "
                            f"({e}). Splits: {list(info.splits)}") from None
        ds = builder.as_dataset(
            split=s, shuffle_files=False, as_supervised=not multi_label,
            # Keep images encoded until after shuffling.
            decoders={image_key: tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=16))
        if multi_label:
            ds = multi_hot_examples(ds, image_key, label_key, label.num_classes)
        return Split(s, ds, size, f"tfds:{builder.info.full_name}:{s}:"
                     f"{builder.data_dir}")

    names = label.names if hasattr(label, "names") else \
        [str(i) for i in range(label.num_classes)]
    if len(names) < 2:
        raise DataError(f"TFDS dataset {name!r} has {len(names)} class(es); "
                        "classification needs at least 2.")
    return Source(name, split(train_split), split(val_split), list(names),
                  multi_label=multi_label)


def _classification_keys(name, info):
    """`(image key, label key, multi_label)` of a TFDS dataset's features."""
    import tensorflow_datasets as tfds

    features = info.features
    if info.supervised_keys and len(info.supervised_keys) == 2:
        image_key, label_key = info.supervised_keys
        if isinstance(features[image_key], tfds.features.Image) and \
                hasattr(features[label_key], "num_classes"):
            return image_key, label_key, False
    labels = features["labels"] if "labels" in features else None
    if "image" in features and isinstance(features["image"], tfds.features.Image) \
            and isinstance(labels, tfds.features.Sequence) and \
            hasattr(labels.feature, "num_classes"):
        return "image", "labels", True
    raise DataError(
        f"TFDS dataset {name!r} is not image classification: it has neither "
        "(image, label) supervised keys nor an 'image' with a sequence of "
        f"class 'labels' (features: {list(features)}).")


def multi_hot_examples(ds, image_key, label_key, num_classes):
    """TFDS examples `{image_key: bytes, label_key: [class, ...], ...}` ->
    `(bytes, float32 multi-hot vector)`; an image with no label gets zeros."""
    def convert(example):
        labels = tf.cast(example[label_key], tf.int32)
        # A sum, not a max: the max of no labels would be -inf, not 0.
        counts = tf.reduce_sum(tf.one_hot(labels, num_classes, dtype=tf.float32),
                               axis=0)
        return example[image_key], tf.ensure_shape(tf.minimum(counts, 1.0),
                                                   [num_classes])

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


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
