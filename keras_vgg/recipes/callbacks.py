"""Callbacks that make a training run resumable after any kill, and the
paper's learning-rate schedule.

`Backup` (model and optimizer state, atomically, per epoch), `HistoryCSV`
(one row per completed epoch), `PlateauSchedule` (divide by 10 on a plateau,
replayed from the history on a restart) and `NaNGuard`. Shared by every
recipe that trains (`train_imagenet`, `finetune`).
"""

import csv
import io
import json
import math
import os
import pathlib
import time

import keras
import numpy as np


class TrainingError(Exception):
    """The run cannot go on; the message says why and what to do."""


def atomic_write(path, text):
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
        atomic_write(os.path.join(self.backup_dir, self.METADATA),
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
    backup that counts its epoch as done. `extra` holds constant columns
    (a run of several stages names each row's stage).
    """

    def __init__(self, path, initial_epoch=0, extra=None):
        super().__init__()
        self.path = pathlib.Path(path)
        self.extra = dict(extra or {})
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
        row = {"epoch": epoch, **self.extra,
               "learning_rate": float(f"{self._lr:.7g}"),
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
        atomic_write(self.path, out.getvalue())


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
