"""The network a transfer recipe starts from, and the classifier built from it.

`load_source` reads `--weights`: `imagenet` (configurations D and E), a
`.keras` model from either recipe, keras.applications' legacy `.h5`, a Keras
`.weights.h5`, or a torchvision/timm state dict (`.pth`, `.safetensors`).
`.keras` files carry their architecture; for the others `--model`,
`--batch_norm`, `--widths` and `--fc_units` say which network the file is
for, and a file that does not fit it is refused here, before any data is
read or any step is trained.

`build_target` then makes the classifier for the target classes: a plain
`keras_vgg.VGG` of the same configuration whose conv layers (and `fc1`,
`fc2` when the source has them and the input size allows) hold the source's
weights, with a new `predictions` layer. It is a VGG like any other, so
evaluation and export take it as they are.
"""

import dataclasses
import hashlib
import os
import re

import keras
import numpy as np

import keras_vgg
from keras_vgg.recipes.modeling import build_model


class WeightsError(ValueError):
    """The source weights are missing or do not fit; the message says why."""


@dataclasses.dataclass
class SourceNet:
    """A loaded source network and what it is.

    Attributes:
        model: the source VGG as loaded (with its classifier when the file
            has one).
        config, batch_norm, widths, fc_units: its architecture.
        input_size: the input side its `fc1` was trained at (None: no top).
        origin: where it came from, for logs and summary.json.
    """

    model: keras.Model
    config: str
    batch_norm: bool
    widths: tuple
    fc_units: int
    input_size: int | None
    origin: str

    @property
    def has_top(self):
        return self.input_size is not None

    def fingerprint(self, layers=None):
        """See `fingerprint`."""
        return fingerprint(self.model, layers)


def fingerprint(model, layers=None):
    """A hash of the weights of `layers` (default: the conv stack, every
    `block*` layer): equal exactly when what they compute is."""
    digest = hashlib.sha256()
    for layer in model.layers:
        if (layer.name in layers) if layers else layer.name.startswith("block"):
            for w in layer.get_weights():
                digest.update(layer.name.encode())
                digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()[:16]


def describe(model):
    """The architecture of a VGG model, read off its layers.

    Returns:
        `(config, batch_norm, widths, fc_units, input_size)`; `fc_units` and
        `input_size` are None for a model without its classifier.

    Raises:
        WeightsError: the model is not a VGG of the paper's Table 1.
    """
    convs = {}
    for layer in model.layers:
        m = re.fullmatch(r"block(\d)_conv(\d)", layer.name)
        if m and isinstance(layer, keras.layers.Conv2D):
            convs.setdefault(int(m.group(1)), []).append(layer)
    names = {layer.name for layer in model.layers}
    kernels = tuple(tuple(c.kernel_size[0] for c in convs.get(b, ())) for b in range(1, 6))
    lrn = "block1_lrn" in names
    config = next((key for key, cfg in keras_vgg.CONFIGS.items()
                   if cfg.kernels == kernels and cfg.lrn == lrn), None)
    if config is None:
        raise WeightsError(
            f"Model {model.name!r} is not a VGG of the paper's Table 1: its "
            f"conv kernels per block are {kernels}"
            f"{' with LRN' if lrn else ''}; expected one of "
            + ", ".join(f"{k} {c.kernels}" for k, c in keras_vgg.CONFIGS.items()))
    widths = tuple(convs[b][0].filters for b in range(1, 6))
    batch_norm = "block1_bn1" in names
    if "fc1" in names:
        return (config, batch_norm, widths, model.get_layer("fc1").units,
                int(model.input.shape[1]))
    return config, batch_norm, widths, None, None


def load_source(weights, model="D", batch_norm=False,
                widths=keras_vgg.models.WIDTHS, fc_units=keras_vgg.models.FC_UNITS,
                explicit=(), trust=False):
    """Loads the source network of a transfer.

    Args:
        weights: `"imagenet"` or the path of a weights or `.keras` file.
        model, batch_norm, widths, fc_units: the architecture the file is
            for (a `.keras` file says its own).
        explicit: names among these four that the user gave; a `.keras`
            file of another architecture than an explicit one is refused.
        trust: load a `.keras` file even if it runs code on loading.

    Returns:
        A `SourceNet`.

    Raises:
        WeightsError: the file is missing, unreadable, or of another network.
    """
    config = keras_vgg.resolve_config(model)
    if weights == "imagenet":
        try:
            net = keras_vgg.VGG(config, batch_norm=batch_norm, weights="imagenet")
        except (ValueError, RuntimeError) as e:
            raise WeightsError(f"--weights=imagenet: {e}") from None
        return SourceNet(net, config, batch_norm, keras_vgg.models.WIDTHS,
                         keras_vgg.models.FC_UNITS, 224, "imagenet")
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise WeightsError(
            f"--weights={path!r}: no such file. Give 'imagenet' (configurations "
            "D and E) or a .keras, .h5, .weights.h5, .pth or .safetensors file.")
    if path.endswith(".keras"):
        return _from_keras_file(path, config, batch_norm, widths, fc_units, explicit,
                                trust)
    classes, fc1_inputs = _head_in_file(path)
    # fc1 sees an (s/32 x s/32 x widths[-1]) map: its kernel gives the input side s.
    size = 32 * round((fc1_inputs / widths[-1]) ** 0.5) if classes else None
    arch = (f"--model={config} --batch_norm={batch_norm} --widths="
            f"{','.join(map(str, widths))} --fc_units={fc_units}")
    try:
        net = keras_vgg.VGG(config, batch_norm=batch_norm, weights=path,
                            include_top=classes is not None, classes=classes or 1000,
                            input_shape=(size, size, 3) if classes else (None, None, 3),
                            widths=tuple(widths), fc_units=fc_units)
    except (ValueError, KeyError, OSError, TypeError) as e:
        raise WeightsError(
            f"--weights={path!r} does not fit the network {arch}: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}. Give the "
            "configuration the file was made for (e.g. --model=E for a VGG-19 "
            "file, --batch_norm for a vgg*_bn file).") from None
    return SourceNet(net, config, batch_norm, tuple(widths), fc_units, size, path)


def _from_keras_file(path, config, batch_norm, widths, fc_units, explicit, trust):
    from keras_vgg.recipes import runs

    try:
        net = runs.load_model(path, trust)
    except ValueError as e:
        raise WeightsError(f"--weights: {e}") from None
    found = describe(net)
    wanted = {"model": config, "batch_norm": batch_norm, "widths": tuple(widths),
              "fc_units": fc_units}
    theirs = dict(zip(("model", "batch_norm", "widths", "fc_units"), found[:4]))
    clash = [f"--{k}={wanted[k]} but the file's is {theirs[k]}" for k in explicit
             if k in wanted and theirs[k] is not None and theirs[k] != wanted[k]]
    if clash:
        raise WeightsError(f"--weights={path!r} is another network: "
                           + "; ".join(clash) + ". Leave these flags out to "
                           "take the file's own architecture.")
    return SourceNet(net, found[0], found[1], found[2],
                     found[3] or keras_vgg.models.FC_UNITS, found[4], path)


def _head_in_file(path):
    """`(classes, fc1 inputs)` of the classifier in a weights file, or
    `(None, None)` if it has none."""
    lower = path.lower()
    if lower.endswith(keras_vgg.weights.TORCH_SUFFIXES):
        from keras_vgg.torch_weights import _head, read_state_dict
        try:
            head = _head(read_state_dict(path))
        except Exception as e:
            raise WeightsError(f"--weights={path!r} is not a readable state dict: "
                               f"{e}") from None
        if head is None:
            return None, None
        (w1, _), _, (w3, _) = head   # torch's (out, in...) layouts
        return int(w3.shape[0]), int(np.prod(w1.shape[1:]))
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if lower.endswith(".weights.h5"):
                # Keras 3 files: layers/dense (fc1), dense_1, dense_2 (predictions).
                dense = sorted((k for k in f.get("layers", {}) if k.startswith("dense")),
                               key=lambda k: int(k.rpartition("_")[2]) if "_" in k else 0)
                if not dense:
                    return None, None
                layers = f["layers"]
                return (int(layers[dense[-1]]["vars"]["1"].shape[0]),
                        int(layers[dense[0]]["vars"]["0"].shape[0]))
            group = f["model_weights"] if "model_weights" in f else f
            if "predictions" not in group or "fc1" not in group:
                return None, None
            shapes = {}
            for layer in ("fc1", "predictions"):
                g = group[layer]
                for name in g.attrs.get("weight_names", []):
                    name = name.decode() if isinstance(name, bytes) else name
                    shapes[layer, "bias" in name] = g[name].shape
            return int(shapes["predictions", True][0]), int(shapes["fc1", False][0])
    except (OSError, KeyError) as e:
        raise WeightsError(f"--weights={path!r} is not a readable weights file "
                           f"({e}).") from None


def build_target(source, cfg, num_classes, multi_label=False):
    """The target classifier: `cfg`'s VGG (the source's architecture, the
    target's classes) with the source's conv layers, and its `fc1`, `fc2`
    when it has them at this input size; the rest is freshly initialised.

    Call under the strategy's scope.

    Returns:
        `(model, copied layer names, fresh layer names)`.
    """
    model = build_model(cfg, num_classes,
                        classifier_activation="sigmoid" if multi_label else "softmax")
    theirs = {layer.name: layer for layer in source.model.layers if layer.weights}
    copied, fresh = [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        src = theirs.get(layer.name)
        shapes = ([tuple(w.shape) for w in src.weights] if src is not None else None,
                  [tuple(w.shape) for w in layer.weights])
        if layer.name != "predictions" and src is not None and shapes[0] == shapes[1]:
            layer.set_weights(src.get_weights())
            copied.append(layer.name)
        else:
            fresh.append(layer.name)
    stale = [n for n in fresh if n.startswith("block")]
    if stale:  # same architecture, so every conv layer must have come across
        raise WeightsError(f"The source network lacks or has other shapes for "
                           f"conv layers {stale}.")
    return model, copied, fresh
