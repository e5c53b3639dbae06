"""The paper's training protocol (section 3.1) with Keras `fit`.

The pieces: `build_model` (the network, the paper's or Glorot's init, L2
weight decay on the weights), `warm_start` (the paper's layer-copy rule),
the callbacks that make a run resumable after any kill (`Backup`,
`HistoryCSV`, `PlateauSchedule`, `NaNGuard`), and `train`, which puts them
together for `recipes/train_imagenet.py`.
"""

import csv
import dataclasses
import io
import json
import math
import os
import pathlib
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

import keras_vgg
from recipes import data as data_lib
from recipes import distribute

PAPER_BATCH = 256  # the learning rate is given for this global batch


class TrainingError(Exception):
    """The run cannot go on; the message says why and what to do."""


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
        if self.eval_scale:
            return self.eval_scale
        low, high = self.scale
        # The paper validates single-scale models at Q = S and jittered ones
        # at Q = 384, the middle of [256, 512].
        return low if low == high else (low + high) // 2


# --------------------------------------------------------------------------
# Model


def build_model(cfg, num_classes):
    """The VGG of `cfg`, initialised as the paper did, with L2 on its weights."""
    model = keras_vgg.VGG(cfg.model, batch_norm=cfg.batch_norm,
                          classes=num_classes,
                          input_shape=(cfg.image_size, cfg.image_size, 3),
                          widths=tuple(cfg.widths), fc_units=cfg.fc_units,
                          dropout=cfg.dropout)
    if keras.config.dtype_policy().name.startswith("mixed"):
        # Mixed precision: the classifier computes in float32, for a stable
        # softmax over many classes and the float32 that top-k metrics take.
        model = keras.models.clone_model(model, clone_function=_float32_classifier)
    if cfg.init == "paper":
        paper_init(model, cfg.seed)
    add_weight_decay(model, cfg.weight_decay)
    return model


def _float32_classifier(layer):
    config = layer.get_config()
    if layer.name == "predictions":
        config["dtype"] = "float32"
    return layer.__class__.from_config(config)


def compile_model(model, cfg, learning_rate):
    """SGD with momentum on the cross-entropy (plus the L2 penalty that
    `build_model` put on the weights), tracking top-1 and top-5 accuracy.
    Call under the strategy's scope."""
    classes = model.output.shape[-1]
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate, momentum=cfg.momentum),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="top1"),
                 keras.metrics.SparseTopKCategoricalAccuracy(
                     k=min(5, classes), name="top5")],
        jit_compile=cfg.jit_compile)


def prebuild(model, image_size):
    """Builds the compiled metrics, loss and optimizer now (call under the
    strategy's scope), from a batch of zeros.

    `fit` would otherwise build them from the first distributed batch, which
    it averages across replicas with `strategy.reduce`; Keras 3.15 does that
    for (images, labels) tuples with MirroredStrategy but fails with
    MultiWorkerMirroredStrategy ("Attempt to convert a value (PerReplica...)").
    Built here, that step has nothing left to do and is skipped.
    """
    model._symbolic_build(data_batch=(
        np.zeros((1, image_size, image_size, 3), "float32"),
        np.zeros((1,), "int64")))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def patch_keras_for_multi_worker():
    """Works around Keras 3.15 reducing scalar step outputs (loss, metrics)
    with `strategy.reduce("MEAN", v, axis=0)` under
    MultiWorkerMirroredStrategy, which fails ("Invalid reduction dimension 0
    for input with 0 dimensions"): scalars are reduced with `axis=None`.
    Other strategies are left to Keras.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer
    from keras.src import tree

    original = tf_trainer.reduce_per_replica
    if getattr(original, "patched_by_keras_vgg", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or \
                not tf_trainer._collective_all_reduce_multi_worker(strategy):
            return original(values, strategy, reduction)

        def reduce(v):
            local = strategy.experimental_local_results(v)[0]
            rank = local.shape.rank
            return strategy.reduce("MEAN", v, axis=0 if rank else None)

        return tree.map_structure(reduce, values)

    reduce_per_replica.patched_by_keras_vgg = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def paper_init(model, seed=0):
    """Weights ~ N(0, variance 1e-2), biases 0 (conv and FC layers)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            layer.kernel.assign(rng.normal(0.0, 0.1, layer.kernel.shape)
                                .astype(layer.kernel.dtype))
            if layer.bias is not None:
                layer.bias.assign(np.zeros(layer.bias.shape, layer.bias.dtype))


def add_weight_decay(model, weight_decay):
    """L2 weight decay on conv and FC kernels (not biases, not BatchNorm).

    Caffe's convention, which the paper's "L2 penalty multiplier 5e-4" is:
    `weight_decay * w` is added to each weight's gradient, i.e. a penalty
    `weight_decay / 2 * ||w||^2`, hence Keras' `L2(weight_decay / 2)`. It is
    set on the variables, not in the layer configs, so `model.keras` stays a
    plain VGG.
    """
    if not weight_decay:
        return
    regularizer = keras.regularizers.L2(weight_decay / 2)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            layer.kernel.regularizer = regularizer


# The paper (section 3.1): "we initialised the first four convolutional
# layers and the last three fully-connected layers with the layers of net A".
# Net A's first four conv layers are these; the deeper nets have layers of the
# same names and shapes (their extra convs are the ones left random).
PAPER_WARM_START = ("block1_conv1", "block2_conv1", "block3_conv1",
                    "block3_conv2", "fc1", "fc2", "predictions")
_A_CONVS = {f"block{b}_conv{i}" for b, n in enumerate((1, 1, 2, 2, 2), 1)
            for i in range(1, n + 1)}


def _weighted_layers(model):
    return {layer.name: layer for layer in model.layers if layer.weights}


def warm_start(model, source):
    """Initialises `model` from a trained `source` model, as the paper did.

    * `source` has the same layers (e.g. a model trained at a smaller S, for
      fine-tuning at a larger S): every layer is copied.
    * `source` is a config A (or A-LRN) model and `model` a deeper one: its
      first four conv layers and its three FC layers are copied into the
      layers of the same names (`PAPER_WARM_START`), with their BatchNorm
      layers when both models have them; the rest keeps its fresh init.

    Args:
        model: the model to initialise (built).
        source: a `keras.Model`, or the path of a `.keras` file.

    Returns:
        The names of the copied layers.

    Raises:
        TrainingError: no rule applies, or shapes differ.
    """
    if not isinstance(source, keras.Model):
        source = keras.saving.load_model(source, compile=False)
    src, dst = _weighted_layers(source), _weighted_layers(model)
    src_convs = {n for n, layer in src.items()
                 if isinstance(layer, keras.layers.Conv2D)}
    if set(src) == set(dst):
        names = [layer.name for layer in model.layers if layer.name in dst]
    elif src_convs == _A_CONVS:
        names = [n for n in PAPER_WARM_START if n in dst]
        # With BatchNorm, each copied conv's BN layer goes with it.
        bns = [n.replace("_conv", "_bn") for n in PAPER_WARM_START if "_conv" in n]
        names += [n for n in bns if n in src and n in dst]
        if len(names) < len(PAPER_WARM_START):
            raise TrainingError(
                f"--init_from: model {model.name!r} lacks some of the layers "
                f"the paper initialises from net A: {PAPER_WARM_START}.")
    else:
        raise TrainingError(
            f"--init_from: cannot warm-start {model.name!r} from "
            f"{source.name!r}. Use a model of the same configuration (to "
            "fine-tune, e.g. at a larger S) or a trained configuration A model "
            "(the paper's warm start of deeper nets).")
    for name in names:
        theirs, ours = src[name].get_weights(), dst[name].get_weights()
        shapes = [w.shape for w in theirs], [w.shape for w in ours]
        if shapes[0] != shapes[1]:
            raise TrainingError(
                f"--init_from: layer {name!r} has weights of shapes {shapes[0]} "
                f"in {source.name!r} but {shapes[1]} here; models must agree "
                "on widths, fc_units, image size and number of classes.")
        dst[name].set_weights(theirs)
    return names


# --------------------------------------------------------------------------
# Callbacks that make a run resumable


def _atomic_write(path, text):
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Backup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose backups survive a kill at any instant.

    Keras writes `latest.weights.h5` and then `training_metadata.json`; a kill
    between the two pairs new weights with the previous epoch number (that
    epoch would then run twice), and a kill during the first leaves a torn
    file. Here each epoch's weights (model and optimizer state) go to their
    own file, and the metadata naming it is replaced atomically afterwards,
    so the metadata always names a complete file of the epoch it states.
    """

    METADATA = "training_metadata.json"

    def restore(self):
        """Restores now (call under the strategy's scope, before `fit`), so
        the callbacks that follow see the restored state; `fit` then skips it."""
        self._load_model()
        self._restored = True

    def on_train_begin(self, logs=None):
        if not getattr(self, "_restored", False):
            self._load_model()

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        epoch = self._current_epoch
        name = f"epoch-{epoch}.weights.h5"
        tmp = os.path.join(self.backup_dir, f"tmp-{name}")
        self.model.save_weights(tmp, overwrite=True)
        os.replace(tmp, os.path.join(self.backup_dir, name))
        # Dropout's random state is not among the saved weights; keeping it
        # makes a resumed run draw the very masks the uninterrupted one would.
        seeds = [np.asarray(v.numpy()).tolist() for v in _seed_states(self.model)]
        _atomic_write(os.path.join(self.backup_dir, self.METADATA),
                      json.dumps({"epoch": epoch, "weights": name,
                                  "seed_states": seeds}))
        for old in os.listdir(self.backup_dir):
            if old.endswith(".weights.h5") and old != name:
                os.remove(os.path.join(self.backup_dir, old))

    def _load_model(self):
        state = read_backup(self.backup_dir)
        if state is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        try:
            self.model.load_weights(os.path.join(self.backup_dir, state["weights"]))
        except ValueError as e:
            raise TrainingError(
                f"The backup in {self.backup_dir} is of a different model or "
                f"optimizer than this command builds ({str(e).splitlines()[0]})"
                ". Resume with the "
                "command that started the run, or use a new --model_dir."
            ) from None
        seeds = state.get("seed_states", [])
        variables = _seed_states(self.model)
        if len(seeds) == len(variables):
            for variable, value in zip(variables, seeds):
                variable.assign(np.asarray(value, variable.dtype))
        self.model._initial_epoch = state["epoch"]


def _seed_states(model):
    """The state variables of the model's random generators (dropout), in
    creation order."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def read_backup(backup_dir):
    """The backup's `{"epoch", "weights"}`, or `None` when there is none."""
    path = os.path.join(backup_dir, Backup.METADATA)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        state = json.load(f)
    if "weights" not in state:  # a plain BackupAndRestore's metadata
        return None
    return state


class HistoryCSV(keras.callbacks.Callback):
    """`history.csv`: one row per completed epoch, never two for one epoch.

    On start the file is cut back to the epochs before `initial_epoch` (those
    the restored backup includes); each epoch's row is then added with an
    atomic rewrite. Add it before `Backup`, so a row is on disk before the
    backup that counts its epoch as done.
    """

    def __init__(self, path, initial_epoch=0):
        super().__init__()
        self.path = pathlib.Path(path)
        self.rows = [r for r in read_history(self.path)
                     if int(r["epoch"]) < initial_epoch]
        self._write()
        self._lr = None
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._lr = float(keras.ops.convert_to_numpy(
            self.model.optimizer.learning_rate))
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, "learning_rate": float(f"{self._lr:.7g}"),
               "seconds": round(time.time() - self._start, 3)}
        row.update({k: float(v) for k, v in (logs or {}).items()
                    if k != "learning_rate"})
        self.rows.append(row)
        self._write()

    def _write(self):
        keys = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=keys or ["epoch"])
        writer.writeheader()
        writer.writerows(self.rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.path, out.getvalue())


def read_history(path):
    """Rows of a `history.csv` (dicts of strings); `[]` when absent."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class PlateauSchedule(keras.callbacks.Callback):
    """The paper's schedule: divide the learning rate by 10 when validation
    accuracy stops improving, at most `max_drops` times (the paper's 3).

    Its state (best accuracy, epochs without improvement, drops) is replayed
    from `history.csv`'s rows on a restart, so a resumed run decays exactly
    when the uninterrupted one would have.
    """

    def __init__(self, base_lr, monitor="val_top1", patience=5, min_delta=1e-3,
                 factor=0.1, max_drops=3, history=()):
        super().__init__()
        self.base_lr, self.monitor, self.patience = base_lr, monitor, patience
        self.min_delta, self.factor, self.max_drops = min_delta, factor, max_drops
        self.best, self.wait, self.drops = -math.inf, 0, 0
        for row in history:
            if row.get(monitor) not in (None, ""):
                self._update(float(row[monitor]))

    @property
    def learning_rate(self):
        return self.base_lr * self.factor ** self.drops

    def _update(self, value):
        if value > self.best + self.min_delta:
            self.best, self.wait = value, 0
            return False
        self.wait += 1
        if self.wait >= self.patience and self.drops < self.max_drops:
            self.drops, self.wait = self.drops + 1, 0
            return True
        return False

    def on_train_begin(self, logs=None):
        self.model.optimizer.learning_rate.assign(self.learning_rate)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        if self._update(float(value)):
            print(f"\nEpoch {epoch + 1}: {self.monitor} has not improved for "
                  f"{self.patience} epochs; learning rate divided by "
                  f"{1 / self.factor:g} to {self.learning_rate:g}.", flush=True)
        self.model.optimizer.learning_rate.assign(self.learning_rate)


class NaNLoss(TrainingError):
    pass


class NaNGuard(keras.callbacks.Callback):
    """Stops at the first non-finite loss, before anything saves that state.

    Raising (rather than setting `stop_training`) skips the epoch-end
    callbacks, so the backup keeps the last good epoch.
    """

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            raise NaNLoss(
                f"The training loss became {float(loss)} at epoch "
                f"{self.epoch + 1}, step {batch + 1}; the run is stopped. The "
                "backup still holds the last completed epoch. Lower "
                "--learning_rate, use --init=glorot or --batch_norm, or warm-"
                "start from a trained configuration A (--init_from).")


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
    strategy = distribute.make_strategy(cfg.cpu_replicas)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        patch_keras_for_multi_worker()
    chief = distribute.is_chief()
    workers = max(1, distribute.num_workers())
    replicas = strategy.num_replicas_in_sync
    model_dir = pathlib.Path(cfg.model_dir)
    # Non-chief workers write their copies where they disturb nothing.
    work_dir = model_dir if chief else model_dir / "workers" / \
        "{}_{}".format(*distribute.task())
    work_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.mixed_precision:
        gpus = tf.config.list_physical_devices("GPU")
        keras.mixed_precision.set_global_policy(
            "mixed_float16" if gpus else "mixed_bfloat16")

    source = data_lib.load_source(cfg.dataset, cfg.data_dir, cfg.manual_dir,
                                  cfg.train_split, cfg.val_split, cfg.download)
    mean_rgb = data_lib.parse_mean_rgb(cfg.mean_rgb, source.train)
    steps = cfg.steps_per_epoch or source.train.size // cfg.batch_size
    if steps < 1:
        raise TrainingError(
            f"The training split has {source.train.size} images, fewer than "
            f"one global batch (--batch_size={cfg.batch_size}).")
    if cfg.batch_size % replicas:
        raise TrainingError(
            f"--batch_size={cfg.batch_size} (global) must be a multiple of the "
            f"{replicas} replicas.")
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
            copied = warm_start(model, cfg.init_from)
            _log(f"Warm start from {cfg.init_from}: copied {', '.join(copied)}.")
        compile_model(model, cfg, lr)
        prebuild(model, cfg.image_size)

    train_ds = data_lib.train_pipeline(
        source.train, global_batch=cfg.batch_size, image_size=cfg.image_size,
        scale=cfg.scale, mean_rgb=mean_rgb, seed=cfg.seed,
        initial_epoch=initial_epoch, epochs=cfg.epochs, steps_per_epoch=steps,
        color_shift=cfg.color_shift)
    val_ds = data_lib.eval_pipeline(
        source.val, batch_size=cfg.batch_size, image_size=cfg.image_size,
        smallest_side=cfg.eval_q, mean_rgb=mean_rgb)
    history_rows = [r for r in read_history(work_dir / "history.csv")
                    if int(r["epoch"]) < initial_epoch]
    history = HistoryCSV(work_dir / "history.csv", initial_epoch)
    schedule = PlateauSchedule(lr, patience=cfg.lr_patience,
                               min_delta=cfg.lr_min_delta,
                               max_drops=cfg.lr_drops, history=history_rows)
    callbacks = [
        NaNGuard(),        # first: raises before any epoch-end callback saves
        history,
        schedule,
        *_tensorboard(work_dir / "logs"),
        # Kept after fit: removed only once model.keras and summary.json are
        # written, so a kill while saving them loses nothing either.
        Backup(str(backup_dir), delete_checkpoint=False),
    ]
    # Backup comes last, so each epoch's row is written before the backup
    # that counts the epoch as done; its restore must come first, so do it now.
    backup = callbacks[-1]
    backup.set_model(model)
    with strategy.scope():
        backup.restore()

    if initial_epoch < cfg.epochs:
        model.fit(train_ds, epochs=cfg.epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=steps, validation_data=val_ds,
                  validation_steps=cfg.validation_steps or None,
                  callbacks=callbacks, shuffle=False,
                  verbose=cfg.verbose if chief else 2)
    else:
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
        from recipes import evaluate
        results = evaluate.evaluate_models(
            [model], source.val, protocols=cfg.evaluate_at_end,
            scales=cfg.eval_scales or (cfg.eval_q,), mean_rgb=mean_rgb,
            batch_size=cfg.batch_size)
        summary["evaluation"] = results
        _log(evaluate.format_results(results))
    _atomic_write(work_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(backup_dir, ignore_errors=True)
    val_top1 = summary["final"]["val_top1"]
    _log(f"Saved {model_path} and {work_dir / 'summary.json'}: {len(rows)} "
         f"epochs, final val top-1 "
         f"{'n/a' if val_top1 is None else f'{val_top1:.4f}'}, "
         f"in {summary['seconds']} s.")
    return summary


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
