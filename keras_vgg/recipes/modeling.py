"""The network a training recipe starts from: the paper's initialisation,
its L2 weight decay, its warm start from net A, and compilation with SGD.
"""

import keras
import numpy as np

import keras_vgg
from keras_vgg.recipes.callbacks import TrainingError


def build_model(cfg, num_classes, classifier_activation="softmax"):
    """The VGG of `cfg`, initialised as the paper did (`cfg.init="paper"`)
    or with Keras' defaults, with L2 on its weights."""
    model = keras_vgg.VGG(cfg.model, batch_norm=cfg.batch_norm,
                          classes=num_classes,
                          classifier_activation=classifier_activation,
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


def compile_model(model, cfg, learning_rate, multi_label=False, multipliers=None):
    """SGD with momentum on the cross-entropy (plus the L2 penalty that
    `build_model` put on the weights), tracking top-1 and top-5 accuracy.
    Call under the strategy's scope.

    Args:
        multi_label: sigmoid outputs and multi-hot labels: binary
            cross-entropy, tracking the area under the precision-recall
            curve (`pr_auc`, close to mean average precision).
        multipliers: `{layer name: factor}` of the learning rate per layer
            (`LayerwiseSGD`); others train at `learning_rate`.
    """
    classes = model.output.shape[-1]
    if multi_label:
        loss = keras.losses.BinaryCrossentropy()
        metrics = [keras.metrics.AUC(curve="PR", multi_label=True, name="pr_auc")]
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="top1"),
                   keras.metrics.SparseTopKCategoricalAccuracy(
                       k=min(5, classes), name="top5")]
    # Plain SGD when no layer has a multiplier: model.keras then needs
    # nothing of this package to load with its optimizer.
    optimizer = LayerwiseSGD(learning_rate, momentum=cfg.momentum,
                             multipliers=multipliers) if multipliers else \
        keras.optimizers.SGD(learning_rate, momentum=cfg.momentum)
    model.compile(
        optimizer=optimizer,
        loss=loss, metrics=metrics, jit_compile=cfg.jit_compile)


@keras.saving.register_keras_serializable(package="keras_vgg")
class LayerwiseSGD(keras.optimizers.SGD):
    """SGD (with momentum) whose learning rate is scaled per layer.

    Caffe's `lr_mult`, as fine-tuning uses it: the pretrained layers learn at
    `multiplier x learning_rate`, a new head at the full rate. Each
    variable's update is exactly the update plain SGD would make at the
    scaled rate (momentum buffer included), since the rate multiplies the
    gradient inside the buffer. Without multipliers it is plain SGD.

    Args:
        learning_rate: the full rate (the schedule's).
        multipliers: `{layer name: factor}`; a variable's layer is the first
            part of its path (`block5_conv1/kernel` -> `block5_conv1`).
        **kwargs: as `keras.optimizers.SGD`.
    """

    def __init__(self, learning_rate=0.01, multipliers=None, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.multipliers = {str(k): float(v) for k, v in (multipliers or {}).items()}

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._factors = [self.multipliers.get(v.path.split("/")[0], 1.0)
                         for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factors[self._get_variable_index(variable)]
        if factor != 1.0:
            learning_rate = keras.ops.multiply(learning_rate, factor)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "multipliers": dict(self.multipliers)}


def prebuild(model, image_size, label_shape=()):
    """Builds the compiled metrics, loss and optimizer now (call under the
    strategy's scope), from a batch of zeros.

    `fit` would otherwise build them from the first distributed batch, which
    it averages across replicas with `strategy.reduce`; Keras 3.15 does that
    for (images, labels) tuples with MirroredStrategy but fails with
    MultiWorkerMirroredStrategy ("Attempt to convert a value (PerReplica...)").
    Built here, that step has nothing left to do and is skipped.
    """
    inputs = (1, image_size, image_size, 3) if isinstance(image_size, int) \
        else (1, *image_size)
    model._symbolic_build(data_batch=(
        np.zeros(inputs, "float32"),
        np.zeros((1, *label_shape), "float32" if label_shape else "int64")))
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


def warm_start(model, source, trust=False):
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
        from keras_vgg.recipes import runs
        try:
            source = runs.load_model(source, trust)
        except ValueError as e:
            raise TrainingError(f"--init_from: {e}") from None
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
