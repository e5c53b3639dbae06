"""Unreadable images in a folder dataset, found before the first step.

Real folders hold empty files, truncated downloads and files that only look
like images; one of them would otherwise stop a run mid-epoch with a raw
TensorFlow error ("Input is empty.") that names no file. `screen` decodes
every image of a folder source once, with the pipelines' own `decode`, in
parallel, and either leaves the unreadable ones out (the default: a count
in the log, their paths in a file) or, strict, fails at start-up listing
them. The result is kept beside the run (`unreadable_images.json`, keyed by
the split's fingerprint), so a restarted run does not decode everything again.
"""

import dataclasses
import json
import pathlib
import re

import tensorflow as tf

from keras_vgg.recipes import data as data_lib
from keras_vgg.recipes import sources

REPORT = "unreadable_images.json"


def unreadable(split):
    """`[(path, reason)]` of the images of a folder split that do not decode."""
    paths = [path for path, _ in split.files]
    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), paths))
    ds = ds.map(lambda i, path: (i, tf.shape(data_lib.decode(tf.io.read_file(path)))[0]),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    good = {int(i) for i, _ in ds.ignore_errors().as_numpy_iterator()}
    bad = [paths[i] for i in range(len(paths)) if i not in good]
    return [(path, _reason(path)) for path in bad]


def _reason(path):
    try:
        data_lib.decode(tf.io.read_file(path))
    except (tf.errors.OpError, ValueError) as e:
        message = (getattr(e, "message", None) or str(e)).strip().splitlines()[0]
        # TensorFlow's wrapping ({{function_node ...}} ... [Op:DecodeJpeg]) says
        # nothing about the file.
        return re.sub(r"^\{\{.*?\}\}\s*|\s*\[Op:.*$", "", message) or message
    return "unreadable"


def screen(source, report_dir, strict=False, log=print, splits=("train", "val")):
    """`source` without the images of its folder splits that do not decode.

    Args:
        source: a `sources.Source`; TFDS sources (checked by TFDS when it
            prepared them) are returned as they are.
        report_dir: where `unreadable_images.json` goes (the run directory).
        strict: fail instead, listing the files.
        log: where the count goes.
        splits: which of the source's splits to screen (evaluation reads
            only `val`).

    Raises:
        DataError: `strict` and some images do not decode, or none does.
    """
    report_path = pathlib.Path(report_dir) / REPORT
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    folders = [getattr(source, f) for f in splits if getattr(source, f).files is not None]
    missing = [split for split in folders if split.fingerprint not in report]
    for split in missing:
        report[split.fingerprint] = {"split": split.name, "unreadable": unreadable(split)}
    if missing:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(report, indent=1) + "\n")
    screened = {}
    for split, field in ((getattr(source, f), f) for f in splits):
        if split.files is None:
            screened[field] = split
            continue
        bad = report[split.fingerprint]["unreadable"]
        if bad and strict:
            listing = "\n".join(f"  {path}: {reason}" for path, reason in bad[:20])
            raise sources.DataError(
                f"{len(bad)} of the {split.size} images of {source.name} "
                f"({split.name}) do not decode (--strict_data):\n{listing}"
                + (f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else "")
                + f"\nThe full list is in {report_path}. Remove or repair them, "
                "or leave out --strict_data to skip them.")
        if bad:
            log(f"Skipping {len(bad)} of the {split.size} {split.name} images of "
                f"{source.name} that do not decode; their paths are in {report_path}.")
        bad_paths = {path for path, _ in bad}
        good = [(p, label) for p, label in split.files if p not in bad_paths]
        if not good:
            raise sources.DataError(f"None of the {split.size} {split.name} images of "
                                    f"{source.name} decodes; see {report_path}.")
        screened[field] = sources.file_split(split.name, good) if bad else split
    return dataclasses.replace(source, **screened)
