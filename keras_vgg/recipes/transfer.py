"""Transfer learning: a trained VGG moved to the user's own images (the
paper's Appendix B, and what people do with VGG today; SPEC section 5).

`TransferConfig` (everything a transfer depends on) and `transfer`, the run
behind `keras-vgg-finetune` / `recipes/finetune.py`. Three strategies:

* `features`: the conv base frozen; its output (`block5_pool`, or an
  earlier `cache_layer`) is computed once per image and cached
  (`feature_cache`); the layers after it (the head: `fc1`, `fc2` of the
  source when it has them, a new `predictions`) train on the cache.
* `finetune`: that head warm-up for `warmup_epochs`, then the layers from
  `unfreeze_from` on train too, on augmented images, the pretrained conv
  layers at `base_lr_multiplier` times the head's learning rate
  (`modeling.LayerwiseSGD`); BatchNorm stays in inference mode unless
  `train_bn`.
* `svm`: Appendix B exactly (`svm`): multi-scale dense `fc2` descriptors and
  one-vs-rest linear SVMs.

Every strategy writes `model.keras` (a complete classifier that
`keras-vgg-export` exports as it is), `summary.json` with held-out
measures, and, when it trains, `history.csv` and a backup after each epoch,
so a killed run resumes where it stopped.
"""

import dataclasses
import json
import pathlib
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

import keras_vgg
from keras_vgg.recipes import data as data_lib
from keras_vgg.recipes import (distribute, feature_cache, metrics, pretrained, runs,
                               screening, sources, svm)
from keras_vgg.recipes.callbacks import TrainingError, atomic_write, read_backup, read_history
from keras_vgg.recipes.modeling import compile_model, prebuild
from keras_vgg.recipes.training import (EVAL_BATCH, PAPER_BATCH, fit_resumable,
                                        start_run, steps_per_epoch, validation_scale)

STRATEGIES = ("features", "finetune", "svm")
CUT = "block5_pool"  # the conv base ends here; the classifier's head starts after it


@dataclasses.dataclass
class TransferConfig:
    """Everything a transfer depends on; `finetune.py` fills it from flags."""

    model_dir: str
    weights: str = "imagenet"          # or paths; several (a,b) for svm
    strategy: str = "features"
    model: str = "D"                   # architecture of weights files that
    batch_norm: bool = False           # do not say their own (not .keras)
    widths: tuple = keras_vgg.models.WIDTHS
    fc_units: int = keras_vgg.models.FC_UNITS
    explicit: tuple = ()               # which of the four the user gave
    dropout: float = 0.5
    init: str = "glorot"               # of the new layers
    dataset: str = "oxford_flowers102"
    data_dir: str = None
    manual_dir: str = None
    download: bool = True
    strict_data: bool = False          # stop on unreadable images instead of skipping
    trust_model_code: bool = False     # load .keras files that run code (Lambda)
    train_split: str = "train"
    val_split: str = None              # held out; default 'test', else 'validation'
    image_size: int = 0                # 0: the source's input size (224)
    scale: tuple = ()                  # finetune's training S; () = 8/7 of image_size
    eval_scale: int = 0                # Q of the held-out images and the cache
    color_shift: bool = True
    mean_rgb: str = "auto"             # auto: the source run's, else ImageNet's
    batch_size: int = 64
    learning_rate: float = 1e-2        # at batch 256, scaled linearly
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 10                   # of the strategy's own training
    warmup_epochs: int = 2             # finetune: head only, first
    cache_layer: str = CUT             # features: frozen through this layer, cached
    unfreeze_from: str = "block5_conv1"
    base_lr_multiplier: float = 0.1
    train_bn: bool = False
    scales: tuple = (256, 384, 512)    # svm: Q of the descriptors
    aggregate: str = "stack"           # svm: stack or avg over scales
    svm_cs: tuple = svm.C_GRID
    svm_folds: int = 3
    seed: int = 0
    cpu_replicas: int = 0
    mixed_precision: bool = False
    jit_compile: bool = False
    cache_dir: str = ""                # default model_dir/cache
    verbose: int = 1

    @property
    def eval_q(self):
        return validation_scale(self.scale, self.eval_scale)


def _log(msg):
    print(msg, flush=True)


def transfer(cfg):
    """Runs (or resumes) the transfer described by `cfg`; returns the summary.

    Writes into `cfg.model_dir`: `cache/` (the frozen outputs or
    descriptors), `backup/` while training, `history.csv`, and at the end
    `model.keras` and `summary.json`.
    """
    start = time.time()
    if cfg.strategy not in STRATEGIES:
        raise TrainingError(f"Unknown strategy {cfg.strategy!r}; allowed: "
                            f"{', '.join(STRATEGIES)}.")
    weights = [w for w in str(cfg.weights).split(",") if w]
    if len(weights) > 1 and cfg.strategy != "svm":
        raise TrainingError(f"--weights={cfg.weights}: several source networks "
                            "are stacked only by --strategy=svm (the paper's D&E).")
    # TensorFlow's devices are split for --cpu_replicas before anything runs.
    distribute.make_strategy(cfg.cpu_replicas)
    # Then the source: weights that do not fit fail before any data is read.
    nets = [pretrained.load_source(w, cfg.model, cfg.batch_norm, cfg.widths,
                                   cfg.fc_units, cfg.explicit, cfg.trust_model_code)
            for w in weights]
    net = nets[0]
    missing = [n.origin for n in nets if not n.has_top]
    if cfg.strategy == "svm" and missing:
        raise TrainingError(
            f"--strategy=svm describes images by the source's fc2 layer "
            f"(the paper's Appendix B); {', '.join(missing)} has no FC layers. "
            "Use weights with their classifier, or --strategy=features.")
    image_size = cfg.image_size or net.input_size or 224
    cfg = dataclasses.replace(
        cfg, model=net.config, batch_norm=net.batch_norm, widths=net.widths,
        fc_units=net.fc_units, image_size=image_size,
        scale=tuple(cfg.scale) or (round(image_size * 8 / 7),) * 2)
    if cfg.scale[0] < image_size:
        raise TrainingError(f"--scale={cfg.scale[0]} is smaller than the input "
                            f"size {image_size}.")
    strategy, chief, workers, work_dir = start_run(cfg)
    replicas = strategy.num_replicas_in_sync
    target = screening.screen(
        sources.load_source(cfg.dataset, cfg.data_dir, cfg.manual_dir,
                            cfg.train_split, cfg.val_split, cfg.download,
                            val_preference=("test", "validation")),
        work_dir, cfg.strict_data, log=_log)
    mean_rgb = _mean_rgb(cfg.mean_rgb, weights[0], target.train)
    cache_dir = pathlib.Path(cfg.cache_dir or work_dir / "cache")
    _log(f"keras_vgg transfer ({cfg.strategy}): {', '.join(n.origin for n in nets)} "
         f"(config {net.config}{' +BN' if net.batch_norm else ''}) to "
         f"{target.name}: {target.train.size} train / {target.val.size} held-out "
         f"({target.val.name}) images, {target.num_classes} classes"
         f"{', multi-label' if target.multi_label else ''}; input {image_size}, "
         f"Q={cfg.eval_q}; {replicas} replica(s) on {workers} worker(s).")

    run = _Run(cfg, strategy, work_dir, cache_dir, target, mean_rgb)
    if cfg.strategy == "svm":
        classifier, details = _svm(run, nets)
    else:
        with strategy.scope():
            classifier, copied, fresh = pretrained.build_target(
                net, cfg, target.num_classes, target.multi_label)
        _check_layers(classifier, cfg)
        _log(f"From the source: {', '.join(copied)}; new: {', '.join(fresh)}.")
        details = {"copied_layers": copied, "new_layers": fresh}
        if cfg.strategy == "features":
            details.update(_train_head(run, classifier, replicas, cfg.epochs, "features"))
        else:
            if cfg.warmup_epochs:
                details.update(_train_head(run, classifier, replicas,
                                           cfg.warmup_epochs, "warmup"))
            details.update(_finetune(run, classifier, replicas))

    rows = read_history(work_dir / "history.csv")
    summary = {
        "strategy": cfg.strategy,
        "source": [{"weights": n.origin, "model": n.config, "batch_norm": n.batch_norm,
                    "widths": list(n.widths), "fc_units": n.fc_units,
                    "input_size": n.input_size} for n in nets],
        "dataset": target.name, "classes": target.num_classes,
        "multi_label": target.multi_label,
        "train_images": target.train.size, "held_out_split": target.val.name,
        "image_size": image_size, "eval_scale": cfg.eval_q,
        "mean_rgb": list(mean_rgb), "epochs_completed": len(rows),
        "distribution": type(strategy).__name__ if workers == 1
        else "MultiWorkerMirroredStrategy", "replicas": replicas, "workers": workers,
        **details,
        "seconds": round(time.time() - start, 1),
        "class_names": target.class_names,
    }
    model_path = work_dir / "model.keras"
    _plain_copy(classifier).save(model_path)
    atomic_write(work_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(work_dir / "backup", ignore_errors=True)
    figure = metrics.headline(summary["held_out"], target.multi_label)
    _log(f"Saved {model_path} and {work_dir / 'summary.json'}: held-out "
         f"{'mAP' if target.multi_label else 'mean class recall'} {figure:.4f} "
         f"in {summary['seconds']} s.")
    return summary


@dataclasses.dataclass
class _Run:
    cfg: TransferConfig
    strategy: tf.distribute.Strategy
    work_dir: pathlib.Path
    cache_dir: pathlib.Path
    target: sources.Source
    mean_rgb: tuple

    @property
    def eval_batch(self):
        return max(self.cfg.batch_size, EVAL_BATCH)

    @property
    def label_shape(self):
        return (self.target.num_classes,) if self.target.multi_label else ()


def _mean_rgb(value, weights, train_split):
    if value == "dataset":
        return data_lib.mean_rgb_of(train_split)
    if value in (None, "auto"):
        return runs.model_mean(weights, None) if str(weights).endswith(".keras") \
            else data_lib.IMAGENET_MEAN_RGB
    return data_lib.parse_mean_rgb(value)


def _check_layers(classifier, cfg):
    names = [layer.name for layer in classifier.layers if layer.weights]
    if cfg.strategy == "finetune" and cfg.unfreeze_from not in names:
        raise TrainingError(
            f"--unfreeze_from={cfg.unfreeze_from!r} is not a layer with weights "
            f"of {classifier.name!r}; allowed: {', '.join(names)}.")
    chain = [layer.name for layer in classifier.layers[1:]]
    base = chain[:chain.index(CUT) + 1]
    if cfg.cache_layer not in base:
        raise TrainingError(
            f"--cache_layer={cfg.cache_layer!r} is not a layer of the conv base of "
            f"{classifier.name!r}; allowed: {', '.join(base)}.")


def _scores(model, batches):
    """`(scores, labels)` of `model` over `(inputs, labels)` batches."""
    scores, labels = [], []
    for x, y in batches:
        scores.append(np.asarray(model(x, training=False), np.float32))
        labels.append(np.asarray(y))
    return np.concatenate(scores), np.concatenate(labels)


def _train_head(run, classifier, replicas, epochs, stage):
    """Trains the head of `classifier` on the cached base outputs, for global
    epochs [0, epochs); returns what summary.json records of it."""
    cfg = run.cfg
    cut = cfg.cache_layer
    base, head = feature_cache.split_model(classifier, cut)
    for layer in head.layers:
        # BatchNorm after an earlier cut keeps the source's statistics, as
        # in fine-tuning, unless --train_bn.
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = cfg.train_bn
    key = dict(cut=cut, source=pretrained.fingerprint(base), image_size=cfg.image_size,
               q=cfg.eval_q, mean_rgb=list(run.mean_rgb))
    started = time.time()
    train_x, train_y = feature_cache.cached(
        run.cache_dir, run.target.train, key, feature_cache.base_outputs(
            base, run.target.train, image_size=cfg.image_size,
            smallest_side=cfg.eval_q, mean_rgb=run.mean_rgb,
            batch_size=run.eval_batch), f"{cut} outputs", cfg.verbose)
    val_x, val_y = feature_cache.cached(
        run.cache_dir, run.target.val, key, feature_cache.base_outputs(
            base, run.target.val, image_size=cfg.image_size,
            smallest_side=cfg.eval_q, mean_rgb=run.mean_rgb,
            batch_size=run.eval_batch), f"{cut} outputs", cfg.verbose)
    cache_seconds = time.time() - started
    steps = steps_per_epoch(cfg, len(train_y), replicas)
    lr = cfg.learning_rate * cfg.batch_size / PAPER_BATCH
    backup_dir = run.work_dir / "backup" / stage
    restored = read_backup(backup_dir)
    initial = restored["epoch"] if restored else 0
    with run.strategy.scope():
        compile_model(head, cfg, lr, run.target.multi_label)
        prebuild(head, tuple(head.input.shape[1:]), run.label_shape)
    train_ds = feature_cache.training_batches(
        train_x, train_y, batch_size=cfg.batch_size, seed=cfg.seed,
        initial_epoch=initial, epochs=epochs, steps_per_epoch=steps)
    val_ds = feature_cache.in_order(val_x, val_y, run.eval_batch)
    if restored:
        _log(f"Resuming {stage} from {backup_dir}: epochs 1-{initial} are done.")
    started = time.time()
    fit_resumable(head, run.strategy, train_ds, val_ds, work_dir=run.work_dir,
                  backup_dir=backup_dir, initial_epoch=initial, epochs=epochs,
                  steps=steps, verbose=cfg.verbose, row_extra={"stage": stage})
    rows = [r for r in read_history(run.work_dir / "history.csv") if r.get("stage") == stage]
    scores, labels = _scores(head, val_ds)
    return {
        "held_out": metrics.held_out(scores, labels, run.target.multi_label),
        f"{stage}_cache_seconds": round(cache_seconds, 1),
        f"{stage}_seconds_per_epoch": _median_seconds(rows),
        f"{stage}_training_seconds": round(time.time() - started, 1),
        "head_learning_rate": float(f"{lr:.7g}"),
    }


def _finetune(run, classifier, replicas):
    """The second stage of `finetune`: the layers from `unfreeze_from` on
    train on augmented images, the pretrained conv layers at
    `base_lr_multiplier` times the head's rate."""
    cfg = run.cfg
    names = [layer.name for layer in classifier.layers]
    first = names.index(cfg.unfreeze_from)
    head_start = names.index(CUT) + 1
    multipliers = {}
    for i, layer in enumerate(classifier.layers):
        bn = isinstance(layer, keras.layers.BatchNormalization)
        # Frozen BatchNorm runs in inference mode: its statistics stay.
        layer.trainable = i >= first and (cfg.train_bn or not bn)
        if layer.trainable and layer.weights and i < head_start:
            multipliers[layer.name] = cfg.base_lr_multiplier
    start_epoch, end = cfg.warmup_epochs, cfg.warmup_epochs + cfg.epochs
    steps = steps_per_epoch(cfg, run.target.train.size, replicas)
    lr = cfg.learning_rate * cfg.batch_size / PAPER_BATCH
    backup_dir = run.work_dir / "backup" / "finetune"
    restored = read_backup(backup_dir)
    initial = restored["epoch"] if restored else start_epoch
    with run.strategy.scope():
        compile_model(classifier, cfg, lr, run.target.multi_label, multipliers)
        prebuild(classifier, cfg.image_size, run.label_shape)
    train_ds = data_lib.train_pipeline(
        run.target.train, global_batch=cfg.batch_size, image_size=cfg.image_size,
        scale=cfg.scale, mean_rgb=run.mean_rgb, seed=cfg.seed,
        initial_epoch=initial, epochs=end, steps_per_epoch=steps,
        color_shift=cfg.color_shift)
    val_ds = data_lib.eval_pipeline(
        run.target.val, batch_size=run.eval_batch, image_size=cfg.image_size,
        smallest_side=cfg.eval_q, mean_rgb=run.mean_rgb)
    trainable = [layer.name for layer in classifier.layers
                 if layer.trainable and layer.weights]
    _log(f"Fine-tuning {', '.join(trainable)}; the base's layers at "
         f"{cfg.base_lr_multiplier:g} x the learning rate {lr:g}.")
    started = time.time()
    fit_resumable(classifier, run.strategy, train_ds, val_ds, work_dir=run.work_dir,
                  backup_dir=backup_dir, initial_epoch=initial, epochs=end,
                  steps=steps, verbose=cfg.verbose, row_extra={"stage": "finetune"})
    rows = [r for r in read_history(run.work_dir / "history.csv")
            if r.get("stage") == "finetune"]
    scores, labels = _scores(classifier, val_ds)
    return {
        "held_out": metrics.held_out(scores, labels, run.target.multi_label),
        "finetune_seconds_per_epoch": _median_seconds(rows),
        "finetune_training_seconds": round(time.time() - started, 1),
        "trained_layers": trainable,
        "base_lr_multiplier": cfg.base_lr_multiplier,
    }


def _svm(run, nets):
    cfg = run.cfg
    descriptor = svm.descriptor_model([n.model for n in nets], cfg.scales, cfg.aggregate)
    key = dict(descriptor="appendix_b", sources=[n.fingerprint() + n.fingerprint(("fc1", "fc2"))
                                                 for n in nets],
               scales=list(cfg.scales), aggregate=cfg.aggregate,
               mean_rgb=list(run.mean_rgb))
    started = time.time()
    arrays = [feature_cache.cached(
        run.cache_dir, split, key, svm.descriptor_batches(
            descriptor, split, mean_rgb=run.mean_rgb, batch_size=cfg.batch_size),
        "Appendix B descriptors", cfg.verbose)
        for split in (run.target.train, run.target.val)]
    (train_x, train_y), (val_x, val_y) = arrays
    cache_seconds = time.time() - started
    started = time.time()
    fit = svm.fit_svm(train_x, train_y, run.target.multi_label, cfg.svm_cs,
                      cfg.svm_folds, cfg.seed, log=_log)
    scores = np.asarray(val_x, np.float64) @ fit["coef"] + fit["intercept"]
    classifier = svm.svm_classifier(descriptor, fit["coef"], fit["intercept"])
    return classifier, {
        "held_out": metrics.held_out(scores, val_y, run.target.multi_label),
        "svm": {"C": fit["C"], "cv": {f"{c:g}": round(v, 5) for c, v in fit["cv"].items()},
                "scales": list(cfg.scales), "aggregate": cfg.aggregate,
                "descriptor_size": int(train_x.shape[1])},
        "svm_descriptor_seconds": round(cache_seconds, 1),
        "svm_fit_seconds": round(time.time() - started, 1),
    }


def _median_seconds(rows):
    values = [float(r["seconds"]) for r in rows if r.get("seconds")]
    return round(float(np.median(values)), 3) if values else None


def _plain_copy(model):
    """`model` as it should be saved: every layer trainable again, float32,
    no optimizer (so it loads, and fine-tunes further, like any VGG)."""
    config = model.get_config()
    for layer in config["layers"]:
        layer["config"]["trainable"] = True
        if "dtype" in layer["config"]:
            layer["config"]["dtype"] = "float32"
    copy = model.__class__.from_config(config)
    copy.set_weights(model.get_weights())
    return copy
