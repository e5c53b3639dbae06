"""Transfer learning (keras_vgg.recipes.transfer and its pieces): frozen layers
stay bitwise, the base learns at exactly its multiplier, frozen BatchNorm keeps
its statistics, the cache holds the base's outputs, the SVM descriptor is the
paper's, every model.keras exports, and wrong inputs fail before training."""

import dataclasses
import json
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import average_precision_score
from test_recipes_helpers import TINY

import keras_vgg
from keras_vgg.recipes import (data as data_lib, feature_cache, metrics, modeling,
                               pretrained, sources, svm, transfer)
from keras_vgg.recipes.callbacks import TrainingError, read_history

SIZE = 32


def spread(model, rng, scale=0.3):
    """Weights (and BatchNorm statistics) spread enough that outputs depend on
    the input far beyond any tolerance used here."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, .1, beta.shape),
                               rng.normal(0, 1, mean.shape), rng.uniform(0.5, 2, var.shape)])
        elif layer.weights:
            layer.set_weights([w + rng.normal(0, scale / np.sqrt(max(1, w.size // w.shape[-1])),
                                              w.shape).astype("float32")
                               for w in layer.get_weights()])
    return model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A target dataset: 3 classes of synthetic images of varied sizes, each
    class a different colour pattern, 8 train and 4 held-out images each."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("target")
    for split, n in (("train", 8), ("val", 4)):
        for c in range(3):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(32, 48, 2)
                image = rng.normal(80, 40, (h, w, 3))
                image[..., c] += 100 * np.sin(np.arange(w) / (2 + c))[None, :]
                Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
                    d / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def source_file(tmp_path_factory):
    """A tiny VGG-11 with BatchNorm and its classifier, saved as a recipe's
    .keras is, with spread weights and BatchNorm statistics."""
    keras.utils.set_random_seed(3)
    model = spread(keras_vgg.VGG("A", batch_norm=True, classes=7,
                                 input_shape=(SIZE, SIZE, 3), dropout=0, **TINY),
                   np.random.default_rng(1))
    path = tmp_path_factory.mktemp("source") / "model.keras"
    model.save(path)
    return str(path)


def config(tmp_path, source_file, folder, **kwargs):
    settings = dict(model_dir=str(tmp_path / "run"), weights=source_file,
                    dataset=f"folder:{folder}", scale=(SIZE, 40), eval_scale=36,
                    batch_size=8, learning_rate=2.0, epochs=2, dropout=0.0, verbose=0,
                    scales=(SIZE, 48))
    return transfer.TransferConfig(**{**settings, **kwargs})


def layer_weights(path_or_model):
    model = path_or_model if isinstance(path_or_model, keras.Model) else \
        keras.saving.load_model(path_or_model, compile=False)
    return {layer.name: [w.copy() for w in layer.get_weights()]
            for layer in model.layers if layer.weights}


def bitwise(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


# --- optimisation ------------------------------------------------------------

FACTORS = {"block4_conv1": 0.1, "block5_conv2": 0.25}


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_the_base_moves_by_exactly_its_multiplier(momentum, rng):
    """One step of the recipe's compiled model from the same weights on the
    same batch, with and without multipliers: each layer with one moves by
    exactly that times the full-rate step, every other layer by the full step."""
    cfg = transfer.TransferConfig(model_dir="", momentum=momentum, weight_decay=0.0)
    x = rng.normal(0, 50, (8, SIZE, SIZE, 3)).astype("float32")
    y = rng.integers(0, 3, 8)
    steps = []
    for multipliers in ({}, FACTORS):
        keras.utils.set_random_seed(0)
        model = spread(keras_vgg.VGG("A", classes=3, input_shape=(SIZE, SIZE, 3),
                                     dropout=0, **TINY), np.random.default_rng(2))
        before = layer_weights(model)
        modeling.compile_model(model, cfg, 0.05, multipliers=multipliers)
        model.train_on_batch(x, y)
        after = layer_weights(model)
        steps.append({n: [a - b for a, b in zip(after[n], before[n])] for n in before})
    full, scaled = steps
    for name in full:
        for f, s, w in zip(full[name], scaled[name], before[name]):
            assert np.abs(f).max() > 1e-5, name   # every layer really moved
            # A step read back as after - before is exact to the weights' ulp.
            ulp = 2 * np.finfo(np.float32).eps * np.abs(w).max()
            np.testing.assert_allclose(s, FACTORS.get(name, 1.0) * f, rtol=1e-5,
                                       atol=ulp, err_msg=name)
    with pytest.raises(AssertionError):  # and the comparison can fail
        np.testing.assert_allclose(scaled["block4_conv1"][0], full["block4_conv1"][0],
                                   rtol=1e-5)


def test_the_momentum_buffer_scales_with_the_multiplier():
    """Two steps of the same gradients: with momentum the second update is
    `lr * factor * g * (1 + momentum)`, the multiplier inside the buffer."""
    a = keras.Variable(np.ones(3, "float32"), name="kernel")
    b = keras.Variable(np.ones(3, "float32"), name="kernel")
    opt = modeling.LayerwiseSGD(0.5, momentum=0.9, multipliers={"x": 0.1})
    opt.build([a, b])
    opt._factors = [0.1, 1.0]   # `a` as a layer with a multiplier, `b` without
    g = np.array([1.0, -2.0, 4.0], "float32")
    for _ in range(2):
        opt.apply([g, g], [a, b])
    np.testing.assert_allclose(1 - a.numpy(), 0.5 * 0.1 * g * (1 + 1.9), rtol=1e-6)
    np.testing.assert_allclose(1 - b.numpy(), 0.5 * g * (1 + 1.9), rtol=1e-6)


def test_layerwise_sgd_round_trips_its_config():
    opt = modeling.LayerwiseSGD(0.1, momentum=0.9, multipliers={"block1_conv1": 0.1})
    again = modeling.LayerwiseSGD.from_config(opt.get_config())
    assert again.multipliers == {"block1_conv1": 0.1} and again.momentum == 0.9


# --- the three strategies ----------------------------------------------------

@pytest.fixture(scope="module")
def features_run(tmp_path_factory, source_file, folder):
    tmp = tmp_path_factory.mktemp("features")
    cfg = config(tmp, source_file, folder, strategy="features")
    return cfg, transfer.transfer(cfg)


def test_features_freeze_the_base_and_train_the_head(features_run, source_file):
    cfg, summary = features_run
    theirs, ours = layer_weights(source_file), layer_weights(f"{cfg.model_dir}/model.keras")
    for name, weights in ours.items():
        if name.startswith("block"):   # conv and BatchNorm, statistics included
            assert bitwise(weights, theirs[name]), name
        elif name in ("fc1", "fc2"):  # from the source, then trained
            assert not bitwise(weights, theirs[name]), name
    assert ours["predictions"][0].shape == (TINY["fc_units"], 3)
    assert summary["new_layers"] == ["predictions"]
    assert [int(r["epoch"]) for r in read_history(f"{cfg.model_dir}/history.csv")] == [0, 1]
    assert set(summary["held_out"]) == {"top1_accuracy", "mean_class_recall", "images"}
    assert summary["held_out"]["images"] == 12


def test_the_cache_holds_the_bases_outputs_and_is_reused(features_run, tmp_path, folder, capsys):
    cfg, _ = features_run
    model = keras.saving.load_model(f"{cfg.model_dir}/model.keras", compile=False)
    base, _ = feature_cache.split_model(model)
    source = sources.load_source(f"folder:{folder}", val_preference=("test", "val"))
    entries = sorted(pathlib.Path(cfg.model_dir, "cache").glob("train-*"))
    assert len(entries) == 1, entries
    cached = np.load(entries[0] / "features.npy")
    images = data_lib.eval_pipeline(source.train, batch_size=64, image_size=SIZE,
                                    smallest_side=36, mean_rgb=summary_mean(cfg))
    expected = np.concatenate([np.asarray(base(x)) for x, _ in images])
    assert expected.std() > 0.1
    np.testing.assert_allclose(cached, expected, rtol=1e-5, atol=1e-5 * expected.std())
    # A later run with the same source and data reads the cache back.
    again = dataclasses.replace(cfg, model_dir=str(tmp_path / "again"), epochs=1,
                                cache_dir=str(entries[0].parent))
    capsys.readouterr()
    transfer.transfer(again)
    out = capsys.readouterr().out
    assert "Cached block5_pool outputs of 24 train images" in out, out[-2000:]
    assert "Computing" not in out


def test_features_from_an_earlier_block_train_the_blocks_after_it(tmp_path, source_file,
                                                                   folder):
    cfg = config(tmp_path, source_file, folder, strategy="features",
                 cache_layer="block3_pool", epochs=1)
    transfer.transfer(cfg)
    theirs, ours = layer_weights(source_file), layer_weights(f"{cfg.model_dir}/model.keras")
    for name, weights in ours.items():
        # BatchNorm stays in inference mode (no --train_bn), in the head too.
        frozen = name.startswith(("block1", "block2", "block3")) or "_bn" in name
        assert bitwise(weights, theirs[name]) == frozen, name
    cached = np.load(next(pathlib.Path(cfg.model_dir, "cache").glob("train-*")) / "features.npy")
    assert cached.shape[1:] == (4, 4, TINY["widths"][2])   # block3_pool's output


def summary_mean(cfg):
    return tuple(json.loads(open(f"{cfg.model_dir}/summary.json").read())["mean_rgb"])


def test_finetune_trains_from_the_named_layer_and_keeps_bn_statistics(tmp_path, source_file,
                                                                     folder):
    cfg = config(tmp_path, source_file, folder, strategy="finetune", warmup_epochs=1,
                 epochs=1, unfreeze_from="block4_conv1")
    summary = transfer.transfer(cfg)
    theirs, ours = layer_weights(source_file), layer_weights(f"{cfg.model_dir}/model.keras")
    for name, weights in ours.items():
        if name.startswith(("block1", "block2", "block3")) or "_bn" in name:
            assert bitwise(weights, theirs[name]), name   # frozen, BN in inference mode
        elif name.startswith("block"):
            assert not bitwise(weights, theirs[name]), name
    assert summary["trained_layers"] == ["block4_conv1", "block4_conv2", "block5_conv1",
                                         "block5_conv2", "fc1", "fc2", "predictions"]
    stages = [(int(r["epoch"]), r["stage"]) for r in read_history(f"{cfg.model_dir}/history.csv")]
    assert stages == [(0, "warmup"), (1, "finetune")]

    # --train_bn: the unfrozen BatchNorm layers learn (statistics and all).
    cfg = dataclasses.replace(cfg, model_dir=str(tmp_path / "bn"), train_bn=True,
                              warmup_epochs=0)
    transfer.transfer(cfg)
    ours = layer_weights(f"{cfg.model_dir}/model.keras")
    assert not bitwise(ours["block5_bn1"], theirs["block5_bn1"])
    assert bitwise(ours["block3_bn1"], theirs["block3_bn1"])


def hand_descriptor(model, image, scales, aggregate, flip=True):
    """Appendix B computed step by step, outside Keras' graph: rescale with
    tf.image.resize, the conv stack, the FC layers applied at every location
    with NumPy, ReLU, mean over locations, the same for the flipped image,
    then stack or average the scales and L2-normalise."""
    conv = keras.Model(model.input, model.get_layer("block5_pool").output)
    backbone = keras_vgg.VGG("A", batch_norm=True, include_top=False,
                             input_shape=(None, None, 3), **TINY)
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(conv.get_layer(layer.name).get_weights())
    w1, b1 = model.get_layer("fc1").get_weights()
    w2, b2 = model.get_layer("fc2").get_weights()
    per_scale = []
    for q in scales:
        h, w = image.shape[:2]
        size = (q, round(w * q / h)) if h <= w else (round(h * q / w), q)
        x = tf.image.resize(image[None], size, antialias=False).numpy()
        views = []
        for view in (x, x[:, :, ::-1]) if flip else (x,):
            f = np.asarray(backbone(view))[0]             # (h', w', c), 7x7 window = 1x1
            fc2 = np.maximum(np.maximum(f @ w1 + b1, 0) @ w2 + b2, 0)
            views.append(fc2.reshape(-1, fc2.shape[-1]).mean(0))
        per_scale.append(np.mean(views, axis=0))
    d = np.concatenate(per_scale) if aggregate == "stack" else np.mean(per_scale, axis=0)
    return d / np.linalg.norm(d)


@pytest.mark.parametrize("aggregate", ["stack", "avg"])
def test_the_svm_descriptor_is_the_papers(source_file, rng, aggregate):
    model = keras.saving.load_model(source_file, compile=False)
    scales = (32, 48, 70)
    descriptor = svm.descriptor_model([model], scales, aggregate)
    image = rng.normal(0, 60, (41, 57, 3)).astype("float32")
    other = rng.normal(0, 60, (41, 57, 3)).astype("float32")
    got = np.asarray(descriptor(np.stack([image, other])))
    want = hand_descriptor(model, image, scales, aggregate)
    assert got.shape == (2, want.size) == (2, (3 if aggregate == "stack" else 1) * 32)
    np.testing.assert_allclose(got[0], want, atol=1e-5)
    # Not a descriptor of anything: the other image's, or without the flip, differs.
    assert np.abs(got[1] - want).max() > 100 * 1e-5
    no_flip = hand_descriptor(model, image, scales, aggregate, flip=False)
    assert np.abs(no_flip - want).max() > 100 * 1e-5
    # Two networks: each L2-normalised, stacked, normalised again.
    both = np.asarray(svm.descriptor_model([model, model], scales, aggregate)(image[None]))[0]
    np.testing.assert_allclose(both, np.concatenate([want, want]) / np.sqrt(2), atol=1e-5)


def test_svm_strategy_end_to_end_and_export(tmp_path, source_file, folder, rng):
    from keras_vgg.export import export_vgg

    cfg = config(tmp_path, source_file, folder, strategy="svm", svm_cs=(0.1, 10.0))
    summary = transfer.transfer(cfg)
    assert summary["svm"]["descriptor_size"] == 2 * TINY["fc_units"]
    assert set(summary["svm"]["cv"]) == {"0.1", "10"}
    model = keras.saving.load_model(f"{cfg.model_dir}/model.keras", compile=False)
    x = keras_vgg.preprocess_input(rng.uniform(0, 255, (2, 50, 61, 3)).astype("float32"))
    expected = np.asarray(model(x))
    assert np.abs(expected[0] - expected[1]).max() > 1e-3
    result = export_vgg.export(f"{cfg.model_dir}/model.keras", str(tmp_path / "out"), "svm")
    served = tf.saved_model.load(result["path"]).signatures["serving_default"]
    np.testing.assert_allclose(served(images=tf.constant(x))["probabilities"].numpy(),
                               expected, rtol=1e-4, atol=1e-5)
    assert result["onnx_max_abs_diff"] < 1e-4


def test_features_and_finetune_models_export(features_run, tmp_path):
    from keras_vgg.export import export_vgg

    cfg, _ = features_run
    result = export_vgg.export(f"{cfg.model_dir}/model.keras", str(tmp_path), "features",
                               formats="saved_model", test_scale=36)
    assert (tmp_path / "features" / "1" / "saved_model.pb").exists()
    assert result["version"] == 1


# --- multi-label data (VOC-like, through TFDS) --------------------------------

def test_multi_hot_examples():
    labels = [[0, 2, 2], [], [1]]
    ds = tf.data.Dataset.from_generator(
        lambda: ({"image": b"x", "labels": np.array(l, np.int64)} for l in labels),
        output_signature={"image": tf.TensorSpec([], tf.string),
                          "labels": tf.TensorSpec([None], tf.int64)})
    got = [y.numpy().tolist() for _, y in sources.multi_hot_examples(ds, "image", "labels", 3)]
    assert got == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]


@pytest.fixture(scope="module")
def multi_label_tfds(tmp_path_factory):
    """A prepared TFDS dataset shaped like voc/2007: an image and a sequence
    of class labels per example; train and test splits."""
    import tensorflow_datasets as tfds

    class ToyVocTransfer(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "labels": tfds.features.Sequence(tfds.features.ClassLabel(
                    names=["cat", "dog", "car"]))}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(0, 24),
                    "test": self._generate_examples(1, 12)}

        def _generate_examples(self, seed, n):
            rng = np.random.default_rng(seed)
            for i in range(n):
                present = [c for c in range(3) if rng.random() < 0.5] or [i % 3]
                image = rng.normal(80, 30, (40, 44, 3))
                for c in present:
                    image[..., c] += 90
                yield i, {"image": np.clip(image, 0, 255).astype(np.uint8),
                          "labels": present}

    data_dir = tmp_path_factory.mktemp("tfds")
    ToyVocTransfer(data_dir=str(data_dir)).download_and_prepare()
    return "toy_voc_transfer", str(data_dir)


def test_multi_label_transfer_reports_map(tmp_path, source_file, multi_label_tfds):
    name, data_dir = multi_label_tfds
    source = sources.load_source(name, data_dir=data_dir, val_preference=("test",))
    assert source.multi_label and source.class_names == ["cat", "dog", "car"]
    cfg = dataclasses.replace(config(tmp_path, source_file, "unused", strategy="features"),
                              dataset=name, data_dir=data_dir)
    summary = transfer.transfer(cfg)
    assert summary["multi_label"] and set(summary["held_out"]) == {"mean_average_precision",
                                                                   "images"}
    model = keras.saving.load_model(f"{cfg.model_dir}/model.keras", compile=False)
    assert model.get_layer("predictions").activation.__name__ == "sigmoid"
    svm_summary = transfer.transfer(dataclasses.replace(
        cfg, model_dir=str(tmp_path / "svm"), strategy="svm", svm_cs=(1.0,)))
    assert 0 < svm_summary["held_out"]["mean_average_precision"] <= 1


def test_map_equals_scikit_learns():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, (40, 4))
    targets[:, 3] = 0            # a class with no positive: left out of the mean
    scores = np.round(rng.normal(size=(40, 4)) + targets, 1)   # ties included
    expected = np.mean([average_precision_score(targets[:, c], scores[:, c])
                        for c in range(3)])
    assert metrics.mean_average_precision(scores, targets) == pytest.approx(expected, abs=1e-12)
    assert metrics.mean_average_precision(-scores, targets) < expected - 0.1
    labels = np.array([0, 0, 0, 1, 2, 2])
    scores = np.eye(3)[[0, 1, 1, 1, 2, 0]]
    assert metrics.mean_class_recall(scores, labels) == pytest.approx((1 / 3 + 1 + 1 / 2) / 3)
    assert metrics.top1_accuracy(scores, labels) == pytest.approx(3 / 6)


# --- inputs that must fail before any training --------------------------------

def test_weights_of_another_configuration_fail_first(tmp_path, source_file, folder):
    other = keras_vgg.VGG("A", classes=7, input_shape=(SIZE, SIZE, 3), **TINY)
    other.save_weights(tmp_path / "a.weights.h5")
    with pytest.raises(pretrained.WeightsError, match="does not fit the network --model=E"):
        pretrained.load_source(str(tmp_path / "a.weights.h5"), "E", widths=TINY["widths"],
                               fc_units=TINY["fc_units"])
    with pytest.raises(pretrained.WeightsError, match="--model=E but the file's is A"):
        pretrained.load_source(source_file, "E", explicit=("model",))
    with pytest.raises(pretrained.WeightsError, match="no such file"):
        pretrained.load_source(str(tmp_path / "missing.keras"))
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(pretrained.WeightsError, match="not a readable state dict"):
        pretrained.load_source(str(tmp_path / "junk.pth"))
    # The right architecture loads, with its classifier.
    net = pretrained.load_source(str(tmp_path / "a.weights.h5"), "A", widths=TINY["widths"],
                                 fc_units=TINY["fc_units"])
    assert net.has_top and net.model.output.shape[-1] == 7


def test_bad_settings_fail_before_training(tmp_path, source_file, folder):
    with pytest.raises(TrainingError, match="'block9_conv1' is not a layer.*block1_conv1"):
        transfer.transfer(config(tmp_path, source_file, folder, strategy="finetune",
                                 unfreeze_from="block9_conv1"))
    assert not (tmp_path / "run" / "history.csv").exists()
    with pytest.raises(TrainingError, match="'fc1' is not a layer of the conv base"):
        transfer.transfer(config(tmp_path, source_file, folder, cache_layer="fc1"))
    one = tmp_path / "one" / "only"
    one.mkdir(parents=True)
    with pytest.raises(sources.DataError, match="at least 2"):
        transfer.transfer(config(tmp_path, source_file, one.parent))
    with pytest.raises(sources.DataError, match="does not exist"):
        transfer.transfer(config(tmp_path, source_file, tmp_path / "nothing"))
    headless = keras_vgg.VGG("A", include_top=False, input_shape=(None, None, 3), **TINY)
    headless.save(tmp_path / "headless.keras")
    with pytest.raises(TrainingError, match="no FC layers"):
        transfer.transfer(config(tmp_path / "h", str(tmp_path / "headless.keras"), folder,
                                 strategy="svm"))
    assert not (tmp_path / "h").exists()   # refused before anything was written


# --- a killed run ---------------------------------------------------------------

def test_a_killed_finetune_resumes_with_every_epoch_once(tmp_path, source_file, folder):
    """finetune.py on 2 CPU replicas, killed with SIGKILL in its second stage
    and started again with the same command, ends with the history of a run
    that was never killed: every epoch once, the same losses."""
    import subprocess
    import sys
    import time

    from test_recipes_helpers import ROOT, recipe_env

    args = [f"--weights={source_file}", f"--dataset=folder:{folder}",
            "--strategy=finetune", "--warmup_epochs=2", "--epochs=8",
            "--unfreeze_from=block4_conv1", "--cpu_replicas=2", "--batch_size=8",
            "--scale=32,40", "--eval_scale=36", "--dropout=0", "--learning_rate=0.5"]

    def start(name):
        return subprocess.Popen(
            [sys.executable, str(ROOT / "recipes" / "finetune.py"), *args,
             f"--model_dir={tmp_path / name}"], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, env=recipe_env())

    whole, killed = start("whole"), start("killed")
    history = tmp_path / "killed" / "history.csv"
    deadline = time.time() + 300
    while time.time() < deadline and killed.poll() is None and len(read_history(history)) < 4:
        time.sleep(0.05)
    assert killed.poll() is None, "the run ended before it could be killed"
    killed.kill()
    killed.wait()
    assert 2 < len(read_history(history)) < 10   # killed inside the finetune stage
    again = start("killed")
    for proc in (again, whole):
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    rows = read_history(history)
    reference = read_history(tmp_path / "whole" / "history.csv")
    assert [(int(r["epoch"]), r["stage"]) for r in rows] == \
        [(e, "warmup" if e < 2 else "finetune") for e in range(10)]
    for key in ("loss", "top1", "val_loss", "val_top1"):
        assert [r[key] for r in rows] == [r[key] for r in reference], key
    assert json.loads((tmp_path / "killed" / "summary.json").read_text())["held_out"] == \
        json.loads((tmp_path / "whole" / "summary.json").read_text())["held_out"]


@pytest.mark.slow
def test_the_smoke_run_shows_transfer_beating_scratch(tmp_path):
    """`finetune.py --smoke` end to end (a few minutes): the table is written,
    every strategy judged on the same held-out images, and the best transfer
    beats the same network trained from scratch on the same few images."""
    import subprocess
    import sys

    from test_recipes_helpers import ROOT, recipe_env

    result = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "finetune.py"), "--smoke",
         f"--model_dir={tmp_path}"], capture_output=True, text=True, timeout=1500,
        env=recipe_env())
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["strategy"]: r for r in json.loads((tmp_path / "smoke.json").read_text())}
    assert list(rows) == ["from scratch", "features", "finetune", "svm"]
    assert {r["images"] for r in rows.values()} == {250}
    table = (tmp_path / "smoke.md").read_text()
    assert "| features |" in table and table.strip() in result.stdout
    scratch = rows["from scratch"]["mean_class_recall"]
    best = max(rows[s]["mean_class_recall"] for s in ("features", "finetune"))
    assert best > scratch + 0.05, rows


def test_mixed_precision_trains_and_saves_a_float32_classifier(tmp_path, source_file, folder):
    cfg = config(tmp_path, source_file, folder, strategy="finetune", warmup_epochs=1,
                 epochs=1, mixed_precision=True)
    try:
        summary = transfer.transfer(cfg)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model = keras.saving.load_model(f"{cfg.model_dir}/model.keras", compile=False)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    assert np.isfinite(summary["held_out"]["top1_accuracy"])
