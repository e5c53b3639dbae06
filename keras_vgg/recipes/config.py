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


def define_train_flags():
    import keras_vgg

    define_data_flags()
    # Model.
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
    flags.DEFINE_enum("init", "paper", ["paper", "glorot"], "Initialisation: "
                      "'paper' (weights N(0, variance 1e-2), biases 0) or "
                      "'glorot' (Glorot uniform, which the authors later found "
                      "trains deep configs without a warm start).")
    flags.DEFINE_string(
        "init_from", "", "A trained .keras model to start from: a config A "
        "model warm-starts a deeper config's first four convs and three FC "
        "layers (the paper's rule); a model of the same config (e.g. trained "
        "at S=256) initialises every layer, for fine-tuning at a larger S.")
    # Data.
    flags.DEFINE_string("train_split", "train", "Training split (TFDS slicing "
                        "allowed, e.g. train[:90%]).")
    flags.DEFINE_string("val_split", None, "Validation split (default: "
                        "'validation', else 'test'; for folders, val/).")
    flags.DEFINE_integer("image_size", 224, "Side of the square training crop "
                         "(the paper's 224).", lower_bound=32)
    flags.DEFINE_string(
        "scale", "256", "Training scale S (smallest image side before "
        "cropping): one value for fixed S (256 or 384 in the paper) or "
        "'min,max' for scale jittering (the paper's 256,512).")
    flags.DEFINE_integer("eval_scale", 0, "Validation scale Q (default: S, or "
                         "the middle of the jittering range).", lower_bound=0)
    flags.DEFINE_boolean("color_shift", True, "AlexNet's PCA colour shift.")
    # Optimisation.
    flags.DEFINE_integer("batch_size", 256, "Global batch size, over all "
                         "replicas and workers (the paper's 256).", lower_bound=1)
    flags.DEFINE_float("learning_rate", 1e-2, "Learning rate for a global batch "
                       "of 256 (the paper's 1e-2; 1e-3 to fine-tune at a larger "
                       "S); scaled linearly with --batch_size.", lower_bound=0.0)
    flags.DEFINE_float("momentum", 0.9, "SGD momentum.", lower_bound=0.0)
    flags.DEFINE_float("weight_decay", 5e-4, "L2 weight decay on conv and FC "
                       "weights, Caffe's convention (adds weight_decay * w to "
                       "the gradient).", lower_bound=0.0)
    flags.DEFINE_integer("epochs", 74, "Epochs (the paper stopped after 74).",
                         lower_bound=1)
    flags.DEFINE_integer("steps_per_epoch", 0, "Steps per epoch (0: one pass "
                         "over the training split).", lower_bound=0)
    flags.DEFINE_integer("validation_steps", 0, "Validation batches per epoch "
                         "(0: the whole split).", lower_bound=0)
    flags.DEFINE_integer("lr_patience", 5, "Epochs without a validation top-1 "
                         "gain before the learning rate is divided by 10.",
                         lower_bound=1)
    flags.DEFINE_integer("lr_drops", 3, "Most divisions of the learning rate "
                         "(the paper's 3).", lower_bound=0)
    flags.DEFINE_integer("seed", 0, "Seed of the init, shuffling and "
                         "augmentation.", lower_bound=0)
    # Distribution and speed.
    flags.DEFINE_integer(
        "cpu_replicas", 0, "Split the CPU into N logical devices and mirror "
        "over them (tries multi-replica training without GPUs); 0: all local "
        "GPUs, or the CPU as one replica.", lower_bound=0)
    flags.DEFINE_boolean("mixed_precision", False, "Mixed precision "
                         "(float16 on GPUs, bfloat16 on CPUs).")
    flags.DEFINE_boolean("jit_compile", False, "Compile the train step with XLA.")
    # Output.
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
    flags.register_validator(
        "scale", lambda v: _valid_ints(v, count=(1, 2), minimum=1),
        message="--scale must be one positive integer (fixed S) or two, "
                "'min,max' (scale jittering), e.g. 256 or 256,512.")
    flags.register_validator(
        "eval_scales", lambda v: not v or _valid_ints(v),
        message="--eval_scales must be positive integers, e.g. 256,384,512.")


def _apply_smoke_defaults():
    for name, value in SMOKE.items():
        if not FLAGS[name].present:
            FLAGS[name].value = value


def train_config():
    """The `TrainConfig` of the parsed flags; `app.UsageError` if they
    contradict each other."""
    from keras_vgg.recipes import data as data_lib
    from keras_vgg.recipes import evaluation as evaluate
    from keras_vgg.recipes.training import TrainConfig

    if FLAGS.smoke:
        _apply_smoke_defaults()
        if not FLAGS["dataset"].present:
            FLAGS.dataset = "folder:" + str(data_lib.write_digits(
                os.path.join(FLAGS.model_dir, "data")))
    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required: the run's directory "
                             "(checkpoints, logs, history.csv, model.keras).")
    scale = tuple(_ints(FLAGS.scale))
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
    if FLAGS.jit_compile and FLAGS.cpu_replicas > 1:
        raise app.UsageError(
            f"--jit_compile with --cpu_replicas={FLAGS.cpu_replicas}: XLA cannot "
            "compile a step whose variables live on several logical CPU devices "
            "(a TensorFlow limitation). Use --jit_compile on GPUs, or with "
            "--cpu_replicas=0.")
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
