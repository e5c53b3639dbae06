"""The recipes' command-line flags, in one place.

`define_data_flags` is shared by `train_imagenet.py` and `evaluate.py`;
`define_train_flags` and `train_config` turn the training flags into a
`keras_vgg.recipes.training.TrainConfig`. Flags are defined by these functions (called
by each script), not on import, so both scripts can be imported together.
"""

import os
import tempfile

from absl import app, flags

FLAGS = flags.FLAGS

# The --smoke run: the same recipe on scikit-learn's handwritten digits (real
# images shipped with an installed package: no download), small enough for 2
# CPU cores. Flags given on the command line win over these.
SMOKE = dict(
    model="A", batch_norm=True, widths=["8", "16", "32", "32", "32"],
    fc_units=64, dropout=0.3, init="glorot", image_size=32, scale="32,40",
    eval_scale=36, mean_rgb="dataset", batch_size=64, learning_rate=0.08,
    epochs=12, lr_patience=2, cpu_replicas=2,
    evaluate="single,dense,multicrop,dense+multicrop",
    eval_scales="36", model_dir=os.path.join(tempfile.gettempdir(),
                                             "keras_vgg_smoke"))


def define_data_flags():
    flags.DEFINE_string(
        "dataset", "imagenet2012",
        "A TensorFlow Datasets image classification dataset (imagenet2012, "
        "cifar10, oxford_flowers102, ...), or folder:/path for a folder of "
        "class subfolders (with train/ and val/ subfolders, or else every "
        "10th image held out for validation).")
    flags.DEFINE_string("data_dir", None, "TFDS data directory (default: "
                        "TFDS' own, ~/tensorflow_datasets).")
    flags.DEFINE_string(
        "manual_dir", None, "Folder with the files TFDS cannot download itself; "
        "for ImageNet, ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar.")
    flags.DEFINE_boolean("download", True, "Let TFDS download and prepare a "
                         "dataset that is not prepared yet.")
    flags.DEFINE_boolean(
        "trust_model_code", False, "Load .keras files even when they hold "
        "code that runs on loading (a Lambda layer); by default such "
        "files, which may come from strangers, are refused.")
    flags.DEFINE_boolean(
        "strict_data", False, "A folder dataset's images are all decoded once "
        "before the first step; those that do not decode are skipped (their "
        "paths written to unreadable_images.json in the run's directory), or "
        "with --strict_data the run stops at start-up listing them.")
    flags.DEFINE_string(
        "mean_rgb", None, "Mean RGB subtracted from inputs: 'imagenet' (the "
        "package's ImageNet mean), 'dataset' (computed from the training "
        "split, as the paper did), or 'R,G,B'. evaluate.py's default takes "
        "it from the run's summary.json beside the model.")
    flags.register_validator(
        "dataset", lambda v: bool(v) and (not v.startswith("folder:")
                                          or len(v) > len("folder:")),
        message="--dataset must be a TFDS name or folder:/path.")
    flags.register_validator("mean_rgb", _valid_mean, message=(
        "--mean_rgb must be 'imagenet', 'dataset', 'auto' (evaluate.py) or "
        "three numbers 'R,G,B'."))


def _valid_mean(value):
    if value in (None, "imagenet", "dataset", "auto"):
        return True
    try:
        return len([float(v) for v in value.split(",")]) == 3
    except ValueError:
        return False


def _ints(text):
    return [int(v) for v in str(text).split(",") if v.strip()]


def _valid_ints(text, count=None, minimum=1):
    try:
        values = _ints(text)
    except ValueError:
        return False
    return bool(values) and (count is None or len(values) in count) and \
        all(v >= minimum for v in values)


def define_model_flags():
    """The network: configuration, BatchNorm, widths, head (both recipes)."""
    import keras_vgg

    flags.DEFINE_string("model", "D", "VGG configuration of the paper's Table 1: "
                        "A, A-LRN, B, C, D, E, or a depth 11, 13, 16, 19.")
    flags.DEFINE_boolean("batch_norm", False, "Add BatchNorm after each conv "
                         "(not in the paper; torchvision's vgg*_bn).")
    flags.DEFINE_list("widths", [str(w) for w in keras_vgg.models.WIDTHS],
                      "Filters of the five conv blocks (the paper's 64,128,"
                      "256,512,512); narrower for small experiments.")
    flags.DEFINE_integer("fc_units", keras_vgg.models.FC_UNITS,
                         "Width of fc1 and fc2 (the paper's 4096).", lower_bound=1)
    flags.DEFINE_float("dropout", 0.5, "Dropout after fc1 and fc2 (the paper's "
                       "0.5).", lower_bound=0.0, upper_bound=0.99)

    def model_ok(value):
        try:
            keras_vgg.resolve_config(value)
            return True
        except ValueError:
            return False

    flags.register_validator("model", model_ok, message=(
        "--model must be a configuration of the paper's Table 1: A, A-LRN, B, "
        "C, D, E, or a depth 11, 13, 16, 19."))
    flags.register_validator(
        "widths", lambda v: _valid_ints(",".join(v), count=(5,)),
        message="--widths must be five positive integers, e.g. 64,128,256,512,512.")


def define_input_flags(transfer=False):
    """Splits, crop size, scales and augmentation (both recipes; a transfer
    takes its input size from the source network by default)."""
    flags.DEFINE_string("train_split", "train", "Training split (TFDS slicing "
                        "allowed, e.g. train[:90%]).")
    flags.DEFINE_string(
        "val_split", None, "Held-out split, for the reported measures "
        "(default: 'test', else 'validation'; for folders, val/)." if transfer
        else "Validation split (default: 'validation', else 'test'; for "
        "folders, val/).")
    flags.DEFINE_integer(
        "image_size", 0 if transfer else 224, "Side of the square input crop "
        "(the paper's 224)" + ("; 0: the source network's." if transfer else "."),
        lower_bound=0 if transfer else 32)
    flags.DEFINE_string(
        "scale", "" if transfer else "256", "Training scale S (smallest image "
        "side before cropping): one value for fixed S (256 or 384 in the "
        "paper) or 'min,max' for scale jittering (the paper's 256,512)"
        + ("; default 8/7 of the input size." if transfer else "."))
    flags.DEFINE_integer("eval_scale", 0, "Validation scale Q (default: S, or "
                         "the middle of the jittering range).", lower_bound=0)
    flags.DEFINE_boolean("color_shift", True, "AlexNet's PCA colour shift.")
    flags.register_validator(
        "scale", lambda v: (transfer and not v) or _valid_ints(v, count=(1, 2),
                                                               minimum=1),
        message="--scale must be one positive integer (fixed S) or two, "
                "'min,max' (scale jittering), e.g. 256 or 256,512.")


def define_optimizer_flags(batch_size=256, learning_rate=1e-2, epochs=74,
                           weight_decay=5e-4):
    """SGD with momentum, L2 weight decay, epochs, seed (both recipes)."""
    flags.DEFINE_integer("batch_size", batch_size, "Global batch size, over all "
                         "replicas and workers (the paper's 256).", lower_bound=1)
    flags.DEFINE_float("learning_rate", learning_rate, "Learning rate for a "
                       "global batch of 256 (the paper's 1e-2; 1e-3 to fine-tune "
                       "at a larger S); scaled linearly with --batch_size.",
                       lower_bound=0.0)
    flags.DEFINE_float("momentum", 0.9, "SGD momentum.", lower_bound=0.0)
    flags.DEFINE_float("weight_decay", weight_decay, "L2 weight decay on conv "
                       "and FC weights, Caffe's convention (adds weight_decay * "
                       "w to the gradient).", lower_bound=0.0)
    flags.DEFINE_integer("epochs", epochs, "Epochs (the paper stopped after 74).",
                         lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of the init, shuffling and "
                         "augmentation.", lower_bound=0)


def define_distribution_flags():
    """Replicas, workers and speed (both recipes)."""
    flags.DEFINE_integer(
        "cpu_replicas", 0, "Split the CPU into N logical devices and mirror "
        "over them (tries multi-replica training without GPUs); 0: all local "
        "GPUs, or the CPU as one replica.", lower_bound=0)
    flags.DEFINE_boolean("mixed_precision", False, "Mixed precision "
                         "(float16 on GPUs, bfloat16 on CPUs).")
    flags.DEFINE_boolean("jit_compile", False, "Compile the train step with XLA.")


def define_train_flags():
    """The flags of `train_imagenet.py`."""
    define_data_flags()
    define_model_flags()
    flags.DEFINE_enum("init", "paper", ["paper", "glorot"], "Initialisation: "
                      "'paper' (weights N(0, variance 1e-2), biases 0) or "
                      "'glorot' (Glorot uniform, which the authors later found "
                      "trains deep configs without a warm start).")
    flags.DEFINE_string(
        "init_from", "", "A trained .keras model to start from: a config A "
        "model warm-starts a deeper config's first four convs and three FC "
        "layers (the paper's rule); a model of the same config (e.g. trained "
        "at S=256) initialises every layer, for fine-tuning at a larger S.")
    define_input_flags()
    define_optimizer_flags()
    flags.DEFINE_integer("steps_per_epoch", 0, "Steps per epoch (0: one pass "
                         "over the training split).", lower_bound=0)
    flags.DEFINE_integer("validation_steps", 0, "Validation batches per epoch "
                         "(0: the whole split).", lower_bound=0)
    flags.DEFINE_integer("lr_patience", 5, "Epochs without a validation top-1 "
                         "gain before the learning rate is divided by 10.",
                         lower_bound=1)
    flags.DEFINE_integer("lr_drops", 3, "Most divisions of the learning rate "
                         "(the paper's 3).", lower_bound=0)
    define_distribution_flags()
    flags.DEFINE_string(
        "model_dir", None, "Run directory: backup/ (resumes a killed run), "
        "logs/ (TensorBoard), history.csv, and at the end model.keras and "
        "summary.json.")
    flags.DEFINE_string("evaluate", "", "Evaluation protocols to run on the "
                        "validation split at the end (e.g. single,dense), "
                        "written into summary.json.")
    flags.DEFINE_string("eval_scales", "", "Test scales Q for --evaluate "
                        "(default: the validation scale).")
    flags.DEFINE_boolean(
        "smoke", False, "A few minutes' end-to-end run on 2 CPU replicas and "
        "scikit-learn's handwritten digits (no download), ending with "
        "evaluation and model.keras; other flags still apply.")
    flags.register_validator(
        "eval_scales", lambda v: not v or _valid_ints(v),
        message="--eval_scales must be positive integers, e.g. 256,384,512.")


def scale_flags():
    """`(S_min, S_max)` of `--scale`, checked against `--image_size` and
    `--eval_scale`, and `--jit_compile` against `--cpu_replicas`;
    `app.UsageError` if they contradict each other (both recipes; `()` for
    an empty `--scale`, a transfer's "from the input size")."""
    scale = tuple(_ints(FLAGS.scale))
    if FLAGS.jit_compile and FLAGS.cpu_replicas > 1:
        raise app.UsageError(
            f"--jit_compile with --cpu_replicas={FLAGS.cpu_replicas}: XLA cannot "
            "compile a step whose variables live on several logical CPU devices "
            "(a TensorFlow limitation). Use --jit_compile on GPUs, or with "
            "--cpu_replicas=0.")
    if not scale:
        return ()
    if len(scale) == 1:
        scale = scale * 2
    if scale[0] > scale[1]:
        raise app.UsageError(f"--scale={FLAGS.scale}: the minimum must not "
                             "exceed the maximum.")
    if scale[0] < FLAGS.image_size:
        raise app.UsageError(
            f"--scale={FLAGS.scale} is smaller than --image_size="
            f"{FLAGS.image_size}: the smallest side S must be at least the crop.")
    if FLAGS.eval_scale and FLAGS.eval_scale < FLAGS.image_size:
        raise app.UsageError(f"--eval_scale={FLAGS.eval_scale} is smaller than "
                             f"--image_size={FLAGS.image_size}.")
    return scale


def _apply_smoke_defaults():
    for name, value in SMOKE.items():
        if not FLAGS[name].present:
            FLAGS[name].value = value


def train_config():
    """The `TrainConfig` of the parsed flags; `app.UsageError` if they
    contradict each other."""
    from keras_vgg.recipes import sources
    from keras_vgg.recipes import evaluation as evaluate
    from keras_vgg.recipes.training import TrainConfig

    if FLAGS.smoke:
        _apply_smoke_defaults()
        if not FLAGS["dataset"].present:
            FLAGS.dataset = "folder:" + str(sources.write_digits(
                os.path.join(FLAGS.model_dir, "data")))
    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required: the run's directory "
                             "(checkpoints, logs, history.csv, model.keras).")
    scale = scale_flags()
    protocols = tuple(p for p in FLAGS.evaluate.split(",") if p)
    unknown = [p for p in protocols if p not in evaluate.PROTOCOLS]
    if unknown:
        raise app.UsageError(f"--evaluate={FLAGS.evaluate}: unknown protocol(s) "
                             f"{unknown}; allowed: {', '.join(evaluate.PROTOCOLS)}.")
    eval_scales = tuple(_ints(FLAGS.eval_scales)) if FLAGS.eval_scales else ()
    if any(q < FLAGS.image_size for q in eval_scales):
        raise app.UsageError(f"--eval_scales={FLAGS.eval_scales}: each Q must be "
                             f"at least --image_size={FLAGS.image_size}.")
    return TrainConfig(
        model_dir=FLAGS.model_dir, model=FLAGS.model, batch_norm=FLAGS.batch_norm,
        widths=tuple(int(w) for w in FLAGS.widths), fc_units=FLAGS.fc_units,
        dropout=FLAGS.dropout, init=FLAGS.init, init_from=FLAGS.init_from,
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
        manual_dir=FLAGS.manual_dir, download=FLAGS.download,
        strict_data=FLAGS.strict_data, trust_model_code=FLAGS.trust_model_code,
        train_split=FLAGS.train_split, val_split=FLAGS.val_split,
        image_size=FLAGS.image_size, scale=scale, eval_scale=FLAGS.eval_scale,
        color_shift=FLAGS.color_shift, mean_rgb=FLAGS.mean_rgb or "imagenet",
        batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
        momentum=FLAGS.momentum, weight_decay=FLAGS.weight_decay,
        epochs=FLAGS.epochs, steps_per_epoch=FLAGS.steps_per_epoch,
        validation_steps=FLAGS.validation_steps, lr_patience=FLAGS.lr_patience,
        lr_drops=FLAGS.lr_drops, seed=FLAGS.seed,
        cpu_replicas=FLAGS.cpu_replicas, mixed_precision=FLAGS.mixed_precision,
        jit_compile=FLAGS.jit_compile, evaluate_at_end=protocols,
        eval_scales=eval_scales)


def define_finetune_flags():
    """The flags of `finetune.py` (a transfer to the user's images)."""
    define_data_flags()
    FLAGS.set_default("dataset", "oxford_flowers102")
    flags.DEFINE_list(
        "weights", ["imagenet"], "The source network: 'imagenet' (--model=D or "
        "E), or a file: a .keras from train_imagenet.py or finetune.py, "
        "keras.applications' .h5, a .weights.h5, or a torchvision/timm .pth or "
        ".safetensors. Several (comma-separated) are stacked by --strategy=svm.")
    define_model_flags()
    flags.DEFINE_enum(
        "strategy", "features", ["features", "finetune", "svm"],
        "features: the conv base frozen, its outputs cached, a head trained on "
        "them; finetune: that head warm-up, then the layers from "
        "--unfreeze_from on; svm: the paper's Appendix B (multi-scale fc2 "
        "descriptors, linear SVM).")
    define_input_flags(transfer=True)
    flags.DEFINE_string(
        "cache_layer", "block5_pool", "features (and finetune's warm-up): the "
        "network is frozen through this layer, whose outputs are cached; the "
        "layers after it train on the cache. Earlier blocks (block3_pool) carry "
        "features less specific to the source's classes.")
    define_optimizer_flags(batch_size=64, epochs=10)
    flags.DEFINE_integer("warmup_epochs", 2, "finetune: epochs of head-only "
                         "training (on the cache) before unfreezing.", lower_bound=0)
    flags.DEFINE_string("unfreeze_from", "block5_conv1", "finetune: this layer "
                        "and all after it train in the second stage.")
    flags.DEFINE_float("base_lr_multiplier", 0.1, "finetune: learning rate of "
                       "the pretrained conv layers, times the head's.",
                       lower_bound=0.0)
    flags.DEFINE_boolean("train_bn", False, "finetune: BatchNorm layers train "
                         "(batch statistics); by default they stay in "
                         "inference mode with the source's statistics.")
    flags.DEFINE_list("scales", ["256", "384", "512"], "svm: test scales Q of "
                      "the descriptors (the paper's 256,384,512).")
    flags.DEFINE_enum("aggregate", "stack", ["stack", "avg"], "svm: combine "
                      "the scales' descriptors by stacking or averaging.")
    define_distribution_flags()
    flags.DEFINE_string(
        "model_dir", None, "Run directory: cache/ (the frozen outputs, reused "
        "by later runs), backup/ (resumes a killed run), history.csv, and at "
        "the end model.keras and summary.json.")
    flags.DEFINE_string("cache_dir", "", "Where cached outputs go (default: "
                        "MODEL_DIR/cache); share one between runs.")
    flags.DEFINE_boolean(
        "smoke", False, "A few minutes' comparison on scikit-learn's digits (no "
        "download): a source trained on digits 0-4, moved to 5-9 with 10 "
        "images per class by training from scratch, features, finetune and "
        "svm; the table goes to MODEL_DIR/smoke.md.")
    flags.register_validator(
        "scales", lambda v: _valid_ints(",".join(v)),
        message="--scales must be positive integers, e.g. 256,384,512.")


def transfer_config():
    """The `TransferConfig` of the parsed finetune flags; `app.UsageError`
    if they contradict each other."""
    from keras_vgg.recipes.transfer import TransferConfig

    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required: the run's directory "
                             "(cache, checkpoints, history.csv, model.keras).")
    scale = scale_flags()
    explicit = tuple(n for n in ("model", "batch_norm", "widths", "fc_units")
                     if FLAGS[n].present)
    return TransferConfig(
        model_dir=FLAGS.model_dir, weights=",".join(FLAGS.weights),
        strategy=FLAGS.strategy, model=FLAGS.model, batch_norm=FLAGS.batch_norm,
        widths=tuple(int(w) for w in FLAGS.widths), fc_units=FLAGS.fc_units,
        explicit=explicit, dropout=FLAGS.dropout, dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir,
        download=FLAGS.download, strict_data=FLAGS.strict_data,
        trust_model_code=FLAGS.trust_model_code,
        train_split=FLAGS.train_split,
        val_split=FLAGS.val_split, image_size=FLAGS.image_size, scale=scale,
        eval_scale=FLAGS.eval_scale, color_shift=FLAGS.color_shift,
        mean_rgb=FLAGS.mean_rgb or "auto", batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate, momentum=FLAGS.momentum,
        weight_decay=FLAGS.weight_decay, epochs=FLAGS.epochs,
        warmup_epochs=FLAGS.warmup_epochs, cache_layer=FLAGS.cache_layer,
        unfreeze_from=FLAGS.unfreeze_from,
        base_lr_multiplier=FLAGS.base_lr_multiplier, train_bn=FLAGS.train_bn,
        scales=tuple(int(q) for q in FLAGS.scales), aggregate=FLAGS.aggregate,
        seed=FLAGS.seed, cpu_replicas=FLAGS.cpu_replicas,
        mixed_precision=FLAGS.mixed_precision, jit_compile=FLAGS.jit_compile,
        cache_dir=FLAGS.cache_dir)


def run_job(argv, job):
    """The body of a training command's `main`: no stray arguments, absl's
    INFO chatter off, and `job()`'s known failures as one `error:` line and
    exit status 1 instead of a traceback."""
    import sys

    from absl import logging

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        # TensorFlow logs every all-reduce at INFO through absl; keep the
        # console to progress bars and the recipe's own messages.
        logging.set_verbosity(logging.WARNING)
    from keras_vgg.recipes import callbacks, distribute, pretrained, sources
    try:
        return job()
    except (sources.DataError, distribute.DistributeError, callbacks.TrainingError,
            pretrained.WeightsError) as e:
        print(f"\nerror: {e}", file=sys.stderr, flush=True)
        sys.exit(1)

