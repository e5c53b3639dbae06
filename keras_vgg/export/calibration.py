"""Calibration images for int8 quantization, read and preprocessed exactly
as evaluation reads them.

Static (full-integer) quantization needs the ranges of every activation,
measured on real inputs. `calibration_images` takes them from a folder
(`folder:PATH`, its training images) or a TFDS split, through the recipes'
own readers and pipeline: the central `image_size` crop of each image
rescaled to Q, the model's mean RGB subtracted, BGR.
"""

import numpy as np

DEFAULT_IMAGES = 300


class CalibrationError(ValueError):
    """No usable calibration set; the message says what to give."""


def calibration_images(dataset, *, image_size, smallest_side, mean_rgb, count=DEFAULT_IMAGES,
                       split=None, data_dir=None):
    """`count` preprocessed images `(count, image_size, image_size, 3)` float32.

    Args:
        dataset: `folder:PATH` or a TFDS name (`imagenet2012`, `caltech101`).
        image_size: the model's input side.
        smallest_side: Q, the rescale before the central crop.
        mean_rgb: the model's mean RGB.
        count: how many (spread over the split: every k-th image).
        split: the TFDS split (default `train`); a folder's training images.
        data_dir: TFDS' data directory.

    Raises:
        CalibrationError: no dataset given, or it has no images.
    """
    if not dataset:
        raise CalibrationError(
            "int8 quantization needs calibration images: pass "
            "--calibration_data=folder:/path/to/images (a folder of class "
            "subfolders, or with train/ and val/) or a TFDS name, e.g. "
            "--calibration_data=imagenet2012 --calibration_split='train[:1%]'.")
    from keras_vgg.recipes import data as data_lib
    from keras_vgg.recipes import screening, sources

    try:
        source = sources.load_source(dataset, data_dir, train_split=split or "train",
                                     download=False)
    except sources.DataError as e:
        raise CalibrationError(f"--calibration_data={dataset}: {e}") from None
    if dataset.startswith("folder:"):   # skip what would not decode
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            source = screening.screen(source, tmp, splits=("train",), log=lambda _: None)
    train = source.train
    if train.size < 1:
        raise CalibrationError(f"--calibration_data={dataset} has no images.")
    step = max(1, train.size // count)
    examples = train.examples.enumerate().filter(lambda i, _: i % step == 0).map(
        lambda i, example: example).take(count)
    ds = data_lib.eval_pipeline(
        sources.Split(train.name, examples, min(count, train.size)),
        batch_size=32, image_size=image_size, smallest_side=smallest_side,
        mean_rgb=mean_rgb)
    images = np.concatenate([x.numpy() for x, _ in ds]).astype(np.float32)
    return images
