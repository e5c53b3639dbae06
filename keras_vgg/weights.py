"""Pretrained-weights metadata and the one place that loads weights files.

Metadata is data (as torchvision's `Weights` enums and timm's
`pretrained_cfg`): where a file comes from, its hash, what it expects of the
input and what it scores, kept next to each other.
"""

import dataclasses
import os
import zipfile

import keras

_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclasses.dataclass(frozen=True)
class WeightsFile:
    fname: str
    url: str
    md5: str


@dataclasses.dataclass(frozen=True)
class PretrainedWeights:
    """One set of pretrained weights and what is known about it."""

    top: WeightsFile
    notop: WeightsFile
    num_params: int
    input_size: int = 224
    preprocessing: str = "caffe: RGB->BGR, subtract mean pixel (103.939, 116.779, 123.68)"
    dataset: str = "ILSVRC-2012 (ImageNet-1k)"
    top1_accuracy: float | None = None
    top5_accuracy: float | None = None
    source: str = ""


def _keras_applications(model, num_params, top1, top5, md5_top, md5_notop):
    stem = f"{model}_weights_tf_dim_ordering_tf_kernels"
    return PretrainedWeights(
        top=WeightsFile(f"{stem}.h5", f"{_KERAS_APPS}{model}/{stem}.h5", md5_top),
        notop=WeightsFile(f"{stem}_notop.h5", f"{_KERAS_APPS}{model}/{stem}_notop.h5",
                          md5_notop),
        num_params=num_params, top1_accuracy=top1, top5_accuracy=top5,
        source="keras.applications (the authors' Caffe release, converted); "
               "accuracy as keras.io reports it, single 224 centre crop")


# (config, batch_norm) -> {weights name: PretrainedWeights}. The files are the
# ones keras.applications uses, so a copy already in ~/.keras/models is reused.
PRETRAINED = {
    ("D", False): {"imagenet": _keras_applications(
        "vgg16", 138_357_544, 0.713, 0.901,
        "64373286793e3c8b2b4e3219cbf3544b", "6d6bbae143d832006294945121d1f1fc")},
    ("E", False): {"imagenet": _keras_applications(
        "vgg19", 143_667_240, 0.713, 0.900,
        "cbe5617147190e668d6c5d5026f83318", "253f8cb515780f3b799900260a226db6")},
}

TORCH_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
KERAS_SUFFIXES = (".weights.h5", ".keras", ".h5", ".hdf5")


def pretrained_file(config, batch_norm, weights, include_top):
    """Fetches (or finds cached) the file for a named set of weights."""
    entry = PRETRAINED[(config, batch_norm)][weights]
    file = entry.top if include_top else entry.notop
    try:
        return keras.utils.get_file(file.fname, file.url, cache_subdir="models",
                                    file_hash=file.md5)
    except Exception as e:  # get_file raises a bare Exception on network errors
        cached = os.path.join(os.environ.get("KERAS_HOME", "~/.keras"), "models",
                              file.fname)
        raise RuntimeError(
            f"Could not fetch the {weights!r} weights ({file.fname}) from "
            f"{file.url}: {e}. Offline, copy the file (md5 {file.md5}) to "
            f"{cached}, or pass weights=<path to the file>.") from e


def load_weights(model, path):
    """Loads a weights file into a keras_vgg model, choosing the reader by suffix.

    - `.weights.h5`, `.keras`: Keras 3 files, matched by the model's structure.
    - `.h5`, `.hdf5`: legacy Keras H5 weights (what keras.applications ships),
      matched by layer name, so a file made for `keras.applications.VGG16`
      loads into `keras_vgg.VGG16` and a full file loads into a headless model.
    - `.safetensors`, `.pth`, `.pt`, `.bin`: a torchvision or timm VGG state
      dict, converted by `keras_vgg.torch_weights`.
    """
    path = os.fspath(path)
    lower = path.lower()
    if not lower.endswith(KERAS_SUFFIXES + TORCH_SUFFIXES):
        raise ValueError(
            f"Cannot tell the format of weights file {path!r} from its name. "
            f"Allowed suffixes: {', '.join(KERAS_SUFFIXES + TORCH_SUFFIXES)}.")
    try:
        if lower.endswith(TORCH_SUFFIXES):
            from keras_vgg.torch_weights import load_torch_weights
            load_torch_weights(model, path)
        elif lower.endswith((".weights.h5", ".keras")):
            model.load_weights(path)
        else:
            _check_layer_names(model, path)
            model.load_weights(path, by_name=True)
    except (OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        # h5py and zipfile say "Unable to synchronously open file (truncated
        # file: ...)" and the like: name the file and what it should be.
        raise ValueError(
            f"Weights file {path!r} cannot be read as a {_kind(lower)} file "
            f"(truncated or corrupt?): {type(e).__name__}: {e}") from None
    return model


def _kind(lower):
    if lower.endswith(TORCH_SUFFIXES):
        return "PyTorch state dict"
    return "Keras .keras" if lower.endswith(".keras") else "Keras HDF5 weights"


def _check_layer_names(model, path):
    """By-name loading skips model layers the file lacks; refuse instead.

    Otherwise a headless file loaded into a model with a top would leave the
    classifier silently random.
    """
    import h5py

    with h5py.File(path, "r") as f:
        group = f["model_weights"] if ("layer_names" not in f.attrs
                                       and "model_weights" in f) else f
        names = [n.decode() if isinstance(n, bytes) else n
                 for n in group.attrs.get("layer_names", [])]
        in_file = {n for n in names if len(group[n].attrs.get("weight_names", []))}
    missing = [layer.name for layer in model.layers
               if layer.weights and layer.name not in in_file]
    if missing:
        raise ValueError(
            f"Weights file {path!r} has no weights for layers {missing} of "
            f"model {model.name!r}. It holds weights for: {sorted(in_file)}. "
            "(A `_notop` file fits only `include_top=False`.)")
