"""The paper's training protocol (section 3.1) with Keras `fit`.

`TrainConfig` (everything a run depends on) and `train`, which puts the
pieces together for `recipes/train_imagenet.py`: the model (`modeling`), the
input pipeline (`data`), the strategy (`distribute`) and the callbacks that
make a run resumable after any kill (`callbacks`).
"""

import dataclasses
import json
import pathlib
import shutil
import time

import keras
import tensorflow as tf

import keras_vgg
from keras_vgg.recipes import data as data_lib
from keras_vgg.recipes import distribute, screening, sources
from keras_vgg.recipes.callbacks import (Backup, HistoryCSV, NaNGuard,
                                         PlateauSchedule, TrainingError,
                                         atomic_write, read_backup,
                                         read_history)
from keras_vgg.recipes.modeling import (build_model, compile_model, prebuild,
                                        patch_keras_for_multi_worker,
                                        warm_start)

PAPER_BATCH = 256  # the learning rate is given for this global batch
EVAL_BATCH = 64    # validation batches at least this large: no gradients to keep


@dataclasses.dataclass
class TrainConfig:
    """Everything a run depends on; `recipes/config.py` fills it from flags."""

    model_dir: str
    model: str = "D"
    batch_norm: bool = False
    widths: tuple = keras_vgg.models.WIDTHS
    fc_units: int = keras_vgg.models.FC_UNITS
    dropout: float = 0.5
    init: str = "paper"                # "paper" (N(0, 1e-2)) or "glorot"
    init_from: str = ""                # a .keras / .weights.h5 to warm-start from
    dataset: str = "imagenet2012"
    data_dir: str = None
    manual_dir: str = None
    download: bool = True
    strict_data: bool = False          # stop on unreadable images instead of skipping
    trust_model_code: bool = False     # load .keras files that run code (Lambda)
    train_split: str = "train"
    val_split: str = None
    image_size: int = 224
    scale: tuple = (256, 256)          # (S_min, S_max)
    eval_scale: int = 0                # Q for validation; 0: S_min, or 384 if jittered
    color_shift: bool = True
    mean_rgb: str = "imagenet"
    batch_size: int = PAPER_BATCH      # global
    learning_rate: float = 1e-2        # at batch 256; scaled linearly
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 74
    steps_per_epoch: int = 0           # 0: one pass over the training split
    validation_steps: int = 0          # 0: the whole validation split
    lr_patience: int = 5
    lr_min_delta: float = 1e-3
    lr_drops: int = 3
    seed: int = 0
    cpu_replicas: int = 0
    mixed_precision: bool = False
    jit_compile: bool = False
    verbose: int = 1
    evaluate_at_end: tuple = ()        # evaluation protocols run on the model at the end
    eval_scales: tuple = ()

    @property
    def eval_q(self):
        return validation_scale(self.scale, self.eval_scale)


def validation_scale(scale, eval_scale=0):
    """Q for validation: `eval_scale` if set, else the paper's choice: Q = S
    for single-scale models, and the middle of the range (384 for [256,
    512]) for jittered ones."""
    if eval_scale:
        return eval_scale
    low, high = scale
    return low if low == high else (low + high) // 2


# --------------------------------------------------------------------------
# The run


def _log(msg):
    print(msg, flush=True)


def train(cfg):
    """Runs (or resumes) the training described by `cfg`.

    Writes into `cfg.model_dir`: `backup/` (while running), `logs/`
    (TensorBoard), `history.csv`, and at the end `model.keras` and
    `summary.json`. Returns the summary dict.
    """
    start = time.time()
    strategy, chief, workers, work_dir = start_run(cfg)
    replicas = strategy.num_replicas_in_sync

    source = screening.screen(
        sources.load_source(cfg.dataset, cfg.data_dir, cfg.manual_dir,
                            cfg.train_split, cfg.val_split, cfg.download),
        work_dir, cfg.strict_data, log=_log)
    mean_rgb = data_lib.parse_mean_rgb(cfg.mean_rgb, source.train)
    steps = steps_per_epoch(cfg, source.train.size, replicas)
    lr = cfg.learning_rate * cfg.batch_size / PAPER_BATCH

    backup_dir = work_dir / "backup"
    restored = read_backup(backup_dir)
    initial_epoch = restored["epoch"] if restored else 0
    _log(f"keras_vgg recipe: config {cfg.model}{' +BN' if cfg.batch_norm else ''}"
         f" on {source.name} ({source.train.size} train / {source.val.size} "
         f"val images, {source.num_classes} classes); {_strategy_name(strategy)}"
         f" with {replicas} replica(s) on {workers} worker(s); global batch "
         f"{cfg.batch_size}, learning rate {lr:g}; S={_scale_str(cfg.scale)}, "
         f"crop {cfg.image_size}, validation Q={cfg.eval_q}.")
    if restored:
        _log(f"Resuming from the backup in {backup_dir}: epochs 1-"
             f"{initial_epoch} are done, continuing with epoch "
             f"{initial_epoch + 1} of {cfg.epochs}.")

    with strategy.scope():
        model = build_model(cfg, source.num_classes)
        if cfg.init_from and not restored:
            copied = warm_start(model, cfg.init_from, trust=cfg.trust_model_code)
            _log(f"Warm start from {cfg.init_from}: copied {', '.join(copied)}.")
        compile_model(model, cfg, lr)
        prebuild(model, cfg.image_size)

    train_ds = data_lib.train_pipeline(
        source.train, global_batch=cfg.batch_size, image_size=cfg.image_size,
        scale=cfg.scale, mean_rgb=mean_rgb, seed=cfg.seed,
        initial_epoch=initial_epoch, epochs=cfg.epochs, steps_per_epoch=steps,
        color_shift=cfg.color_shift)
    val_ds = data_lib.eval_pipeline(
        source.val, batch_size=max(cfg.batch_size, EVAL_BATCH), image_size=cfg.image_size,
        smallest_side=cfg.eval_q, mean_rgb=mean_rgb)
    history_rows = [r for r in read_history(work_dir / "history.csv")
                    if int(r["epoch"]) < initial_epoch]
    schedule = PlateauSchedule(lr, patience=cfg.lr_patience,
                               min_delta=cfg.lr_min_delta,
                               max_drops=cfg.lr_drops, history=history_rows)
    if not fit_resumable(model, strategy, train_ds, val_ds, work_dir=work_dir,
                         backup_dir=backup_dir, initial_epoch=initial_epoch,
                         epochs=cfg.epochs, steps=steps, schedule=schedule,
                         validation_steps=cfg.validation_steps or None,
                         verbose=cfg.verbose if chief else 2):
        _log("Training was complete; writing the final files.")

    rows = read_history(work_dir / "history.csv")
    final = {k: float(v) for k, v in rows[-1].items()} if rows else {}
    summary = {
        "model": cfg.model, "batch_norm": cfg.batch_norm,
        "widths": list(cfg.widths), "fc_units": cfg.fc_units,
        "dataset": source.name, "classes": source.num_classes,
        "image_size": cfg.image_size, "scale": list(cfg.scale),
        "eval_scale": cfg.eval_q, "mean_rgb": list(mean_rgb),
        "replicas": replicas, "workers": workers,
        "strategy": _strategy_name(strategy),
        "global_batch_size": cfg.batch_size,
        "learning_rate": float(f"{lr:.7g}"),
        "epochs": cfg.epochs, "epochs_completed": len(rows),
        "steps_per_epoch": steps,
        "final": {k: final.get(k) for k in (
            "loss", "top1", "top5", "val_loss", "val_top1", "val_top5",
            "learning_rate")},
        "seconds": round(time.time() - start, 1),
        "class_names": source.class_names,
    }
    model_path = work_dir / "model.keras"
    model.save(model_path)
    if cfg.evaluate_at_end and chief:
        from keras_vgg.recipes import evaluation as evaluate
        results = evaluate.evaluate_models(
            [model], source.val, protocols=cfg.evaluate_at_end,
            scales=cfg.eval_scales or (cfg.eval_q,), mean_rgb=mean_rgb,
            batch_size=cfg.batch_size)
        summary["evaluation"] = results
        _log(evaluate.format_results(results))
    atomic_write(work_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(backup_dir, ignore_errors=True)
    val_top1 = summary["final"]["val_top1"]
    _log(f"Saved {model_path} and {work_dir / 'summary.json'}: {len(rows)} "
         f"epochs, final val top-1 "
         f"{'n/a' if val_top1 is None else f'{val_top1:.4f}'}, "
         f"in {summary['seconds']} s.")
    return summary


def start_run(cfg):
    """The distribution strategy, seeds and precision of a run, and where it
    writes: `(strategy, chief, workers, work_dir)`. Non-chief workers write
    their copies under `model_dir/workers/`, where they disturb nothing."""
    strategy = distribute.make_strategy(cfg.cpu_replicas)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        patch_keras_for_multi_worker()
    chief = distribute.is_chief()
    workers = max(1, distribute.num_workers())
    model_dir = pathlib.Path(cfg.model_dir)
    work_dir = model_dir if chief else model_dir / "workers" / \
        "{}_{}".format(*distribute.task())
    work_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.mixed_precision:
        gpus = tf.config.list_physical_devices("GPU")
        keras.mixed_precision.set_global_policy(
            "mixed_float16" if gpus else "mixed_bfloat16")
    return strategy, chief, workers, work_dir


def steps_per_epoch(cfg, images, replicas):
    """`cfg.steps_per_epoch`, or one pass over `images` in global batches;
    `TrainingError` when the batch cannot be split or is larger than the data."""
    steps = getattr(cfg, "steps_per_epoch", 0) or images // cfg.batch_size
    if steps < 1:
        raise TrainingError(
            f"The training split has {images} images, fewer than "
            f"one global batch (--batch_size={cfg.batch_size}).")
    if cfg.batch_size % replicas:
        raise TrainingError(
            f"--batch_size={cfg.batch_size} (global) must be a multiple of the "
            f"{replicas} replicas.")
    return steps


def fit_resumable(model, strategy, train_ds, val_ds, *, work_dir, backup_dir,
                  initial_epoch, epochs, steps, schedule=None,
                  validation_steps=None, verbose=1, row_extra=None):
    """`model.fit` for epochs `initial_epoch` ... `epochs - 1`, resumable
    after any kill: `history.csv` in `work_dir` gets one row per epoch, and
    `backup_dir` the model and optimizer state after each (restored here
    first, if present). Every recipe that trains goes through this.

    Args:
        model: the compiled model (built under `strategy`'s scope).
        train_ds: the batches of epochs `initial_epoch` on.
        val_ds: validation batches (or None).
        schedule: a learning-rate callback (e.g. `PlateauSchedule`), or None
            for the optimizer's own.
        row_extra: constant columns for this call's `history.csv` rows.

    Returns:
        Whether any epoch was left to train.
    """
    # Kept after fit: removed only once the run's final files are written,
    # so a kill while saving them loses nothing either.
    backup = Backup(str(backup_dir), delete_checkpoint=False)
    backup.set_model(model)
    with strategy.scope():
        backup.restore()
    if initial_epoch >= epochs:
        # Done before (a later stage may have written rows since): leave
        # history.csv as it is.
        return False
    callbacks = [
        NaNGuard(),        # first: raises before any epoch-end callback saves
        HistoryCSV(pathlib.Path(work_dir) / "history.csv", initial_epoch,
                   extra=row_extra),
        *([schedule] if schedule is not None else []),
        *_tensorboard(pathlib.Path(work_dir) / "logs"),
        # Last, so each epoch's row is written before the backup that counts
        # the epoch as done; its restore came first, above.
        backup,
    ]
    model.fit(train_ds, epochs=epochs, initial_epoch=initial_epoch,
              steps_per_epoch=steps, validation_data=val_ds,
              validation_steps=validation_steps, callbacks=callbacks,
              shuffle=False, verbose=verbose)
    return True


def _tensorboard(log_dir):
    """The TensorBoard callback, when the `tensorboard` package (which writes
    the summaries) is installed."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        _log("TensorBoard logs are off: `pip install tensorboard` to get them "
             f"in {log_dir}.")
        return []
    return [keras.callbacks.TensorBoard(str(log_dir))]


def _strategy_name(strategy):
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"  # not its implementation's name
    return type(strategy).__name__


def _scale_str(scale):
    return str(scale[0]) if scale[0] == scale[1] else f"[{scale[0]}, {scale[1]}]"
