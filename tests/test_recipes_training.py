"""recipes/training.py: init, weight decay, the paper's warm start, and the
callbacks that make a run resumable (in-process, tiny models)."""

import json

import keras
import numpy as np
import pytest

import keras_vgg
from test_recipes_helpers import TINY

from keras_vgg.recipes import callbacks, modeling, training


def tiny(config, batch_norm=False, classes=10, **kwargs):
    return keras_vgg.VGG(config, batch_norm=batch_norm, classes=classes,
                         input_shape=(32, 32, 3), **{**TINY, **kwargs})


def weights_by_layer(model):
    return {layer.name: [w.copy() for w in layer.get_weights()]
            for layer in model.layers if layer.weights}


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("config,batch_norm", [("D", False), ("E", False),
                                               ("C", False), ("B", True)])
def test_warm_start_from_a_copies_exactly_the_papers_layers(config, batch_norm):
    source = tiny("A", batch_norm)
    target = tiny(config, batch_norm)
    modeling.paper_init(target, seed=1)
    before = weights_by_layer(target)
    copied = modeling.warm_start(target, source)
    expected = list(modeling.PAPER_WARM_START)
    if batch_norm:
        expected += ["block1_bn1", "block2_bn1", "block3_bn1", "block3_bn2"]
    assert copied == expected
    # The first four conv layers of A and its three FC layers...
    assert expected[:7] == ["block1_conv1", "block2_conv1", "block3_conv1",
                            "block3_conv2", "fc1", "fc2", "predictions"]
    theirs, after = weights_by_layer(source), weights_by_layer(target)
    for name, weights in after.items():
        if name in expected:
            assert same(weights, theirs[name]), name
        else:  # ... and nothing else: the other layers keep their init.
            assert same(weights, before[name]), name
    assert len(after) > len(expected)


def test_warm_start_from_the_same_config_copies_everything(tmp_path):
    source = tiny("D")
    path = tmp_path / "s256.keras"
    source.save(path)                        # --init_from takes a file
    target = tiny("D")
    copied = modeling.warm_start(target, str(path))
    assert len(copied) == len(weights_by_layer(target))
    for name, weights in weights_by_layer(target).items():
        assert same(weights, weights_by_layer(source)[name]), name


def test_warm_start_refuses_what_the_paper_did_not_do():
    with pytest.raises(callbacks.TrainingError, match="configuration A model"):
        modeling.warm_start(tiny("D"), tiny("B"))
    with pytest.raises(callbacks.TrainingError, match="'predictions'"):
        modeling.warm_start(tiny("D"), tiny("A", classes=5))


def test_paper_init_and_weight_decay():
    model = tiny("A")
    modeling.paper_init(model, seed=0)
    kernel = model.get_layer("block3_conv1").kernel.numpy()
    assert abs(kernel.std() - 0.1) < 0.01 and abs(kernel.mean()) < 0.01
    assert not np.any(model.get_layer("fc1").bias.numpy())
    modeling.add_weight_decay(model, 5e-4)
    kernels = [layer.kernel for layer in model.layers
               if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    assert len(model.losses) == len(kernels) == 8 + 3
    # Caffe's convention: the penalty is wd/2 ||w||^2, its gradient wd * w.
    expected = sum(2.5e-4 * np.sum(k.numpy() ** 2) for k in kernels)
    np.testing.assert_allclose(float(sum(model.losses)), expected, rtol=1e-5)
    # model.keras stays a plain VGG: the decay is not in the layer configs.
    assert model.get_layer("fc1").get_config()["kernel_regularizer"] is None


def test_plateau_schedule_divides_by_ten_at_most_three_times_and_replays():
    accuracies = [0.1, 0.2, 0.2, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]
    full = callbacks.PlateauSchedule(1e-2, patience=2, max_drops=3)
    rates = []
    for a in accuracies:
        full._update(a)
        rates.append(full.learning_rate)
    assert rates == pytest.approx([1e-2] * 3 + [1e-3] * 3 + [1e-4] * 2
                                  + [1e-5] * 4)
    # Restarted after 5 epochs: replaying history.csv gives the same state.
    rows = [{"epoch": str(i), "val_top1": str(a)} for i, a in enumerate(accuracies[:5])]
    resumed = callbacks.PlateauSchedule(1e-2, patience=2, max_drops=3, history=rows)
    assert resumed.learning_rate == pytest.approx(rates[4])
    for a, rate in zip(accuracies[5:], rates[5:]):
        resumed._update(a)
        assert resumed.learning_rate == pytest.approx(rate)


def test_history_csv_drops_epochs_the_backup_does_not_include(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n0,3.0\n1,2.0\n2,1.5\n3,1.2\n")
    callbacks.HistoryCSV(path, initial_epoch=2)
    assert [r["epoch"] for r in callbacks.read_history(path)] == ["0", "1"]


def _compiled(seed=0):
    keras.utils.set_random_seed(seed)
    model = tiny("A", dropout=0.0)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  "sparse_categorical_crossentropy")
    return model


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_backup_restores_weights_optimizer_and_epoch(tmp_path, rng):
    x = rng.normal(size=(16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 16)
    backup = tmp_path / "backup"
    model = _compiled()
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=8, epochs=5, verbose=0, shuffle=False,
                  callbacks=[callbacks.Backup(str(backup)), _Interrupt(2)])
    state = callbacks.read_backup(backup)
    assert (state["epoch"], state["weights"]) == (2, "epoch-2.weights.h5")
    assert sorted(p.name for p in backup.iterdir()) == [
        "epoch-2.weights.h5", "training_metadata.json"]
    # A kill while writing the next backup leaves a temporary file: ignored.
    (backup / "tmp-epoch-3.weights.h5").write_bytes(b"torn")
    restored = _compiled(seed=1)
    callback = callbacks.Backup(str(backup))
    callback.set_model(restored)
    callback.restore()
    assert restored._initial_epoch == 2
    assert int(restored.optimizer.iterations.numpy()) == 4
    for a, b in zip(model.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(model.optimizer.variables, restored.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # A different model in the same --model_dir is refused with advice.
    other = keras_vgg.VGG("A", classes=10, input_shape=(32, 32, 3),
                          widths=(8, 8, 8, 16, 16), fc_units=32)
    other.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  "sparse_categorical_crossentropy")
    callback = callbacks.Backup(str(backup))
    callback.set_model(other)
    with pytest.raises(callbacks.TrainingError, match="different model.*new --model_dir"):
        callback.restore()


def test_nan_loss_stops_the_run_before_it_is_saved(tmp_path, rng):
    x = rng.normal(size=(16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 16)
    model = _compiled()
    backup = tmp_path / "backup"

    class Diverge(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            bias = self.model.get_layer("predictions").bias
            bias.assign(np.full(bias.shape, np.nan, "float32"))

    with pytest.raises(callbacks.NaNLoss, match="became nan at epoch 1, step 2"):
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False,
                  callbacks=[Diverge(), callbacks.NaNGuard(),
                             callbacks.Backup(str(backup))])
    assert callbacks.read_backup(backup) is None


def test_train_in_process_writes_the_run(tmp_path, monkeypatch):
    from keras_vgg.recipes import sources
    root = sources.write_digits(tmp_path / "digits")
    cfg = training.TrainConfig(
        model_dir=str(tmp_path / "run"), model="A", batch_norm=True,
        widths=(4, 8, 8, 16, 16), fc_units=32, init="glorot",
        dataset=f"folder:{root}", image_size=32, scale=(32, 36),
        mean_rgb="dataset", batch_size=32, learning_rate=0.1, epochs=2,
        steps_per_epoch=8, verbose=0, evaluate_at_end=("single", "dense"))
    summary = training.train(cfg)
    run = tmp_path / "run"
    assert json.loads((run / "summary.json").read_text()) == summary
    assert summary["epochs_completed"] == 2 and summary["replicas"] == 1
    assert summary["global_batch_size"] == 32
    assert summary["learning_rate"] == pytest.approx(0.1 * 32 / 256)
    for key in ("loss", "top1", "top5", "val_loss", "val_top1", "val_top5"):
        assert summary["final"][key] is not None, key
    assert [r["epoch"] for r in callbacks.read_history(run / "history.csv")] == ["0", "1"]
    assert not (run / "backup").exists()          # removed once complete
    model = keras.saving.load_model(run / "model.keras")
    assert model.output.shape[-1] == 10
    assert set(summary["evaluation"]) >= {"single", "dense"}

    # Killed after the last epoch, while saving model.keras: the rerun trains
    # nothing more and writes the final files from the backup.
    history = (run / "history.csv").read_text()
    (run / "model.keras").unlink()
    cfg.evaluate_at_end = ()
    cfg.model_dir = str(tmp_path / "run2")
    monkeypatch.setattr(keras.Model, "save", _killed)
    with pytest.raises(KeyboardInterrupt):
        training.train(cfg)
    monkeypatch.undo()
    run2 = tmp_path / "run2"
    assert callbacks.read_backup(run2 / "backup")["epoch"] == 2
    summary2 = training.train(cfg)
    assert summary2["epochs_completed"] == 2
    assert (run2 / "history.csv").read_text().count("\n") == history.count("\n")
    assert (run2 / "model.keras").exists() and not (run2 / "backup").exists()


def _killed(*args, **kwargs):
    raise KeyboardInterrupt


def test_a_resumed_run_is_the_uninterrupted_run(tmp_path, monkeypatch):
    """Interrupted after epoch 2's row is written (before its backup), the
    rerun redoes epoch 2 from the epoch-1 backup, with the same batches,
    augmentations and dropout masks: every number matches, bit for bit."""
    from keras_vgg.recipes import sources
    root = sources.write_digits(tmp_path / "digits")

    def cfg(name):
        return training.TrainConfig(
            model_dir=str(tmp_path / name), model="A", batch_norm=True,
            widths=(4, 8, 8, 16, 16), fc_units=32, init="glorot", dropout=0.5,
            dataset=f"folder:{root}", image_size=32, scale=(32, 36),
            mean_rgb="dataset", batch_size=32, learning_rate=0.1, epochs=3,
            steps_per_epoch=5, verbose=0)

    training.train(cfg("straight"))
    write_row = callbacks.HistoryCSV.on_epoch_end

    def killed_after_row(self, epoch, logs=None):
        write_row(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(callbacks.HistoryCSV, "on_epoch_end", killed_after_row)
    with pytest.raises(KeyboardInterrupt):
        training.train(cfg("resumed"))
    monkeypatch.undo()
    assert callbacks.read_backup(tmp_path / "resumed" / "backup")["epoch"] == 1
    training.train(cfg("resumed"))
    straight = callbacks.read_history(tmp_path / "straight" / "history.csv")
    resumed = callbacks.read_history(tmp_path / "resumed" / "history.csv")
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed] == \
        [{k: v for k, v in r.items() if k not in drop} for r in straight]
    a = keras.saving.load_model(tmp_path / "straight" / "model.keras")
    b = keras.saving.load_model(tmp_path / "resumed" / "model.keras")
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
