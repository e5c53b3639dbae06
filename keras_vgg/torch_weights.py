"""Weights trained in PyTorch: torchvision and timm VGG state dicts.

torchvision (`vgg11` ... `vgg19_bn`) names the conv stack `features.{i}` and
the head `classifier.{0,3,6}`; timm names the same conv stack `features.{i}`
and its head `pre_logits.fc1` (a 7x7 conv), `pre_logits.fc2` (1x1 conv) and
`head.fc`. Both are converted here; nothing else in the package knows torch's
layouts.
"""

import os
import pickle
import re

import numpy as np


def read_state_dict(source):
    """Reads a state dict into `{name: np.ndarray}`.

    Args:
        source: a mapping of names to arrays/tensors, or the path to a
            `.safetensors` file (read without torch) or a `.pth`/`.pt`/`.bin`
            file (needs torch; a checkpoint dict with a `"state_dict"` or
            `"model"` entry is unwrapped).
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path.lower().endswith(".safetensors"):
            from safetensors import SafetensorError
            from safetensors.numpy import load_file
            try:
                state = load_file(path)
            except SafetensorError as e:
                raise ValueError(f"{path!r} is not a readable .safetensors file "
                                 f"(truncated or corrupt?): {e}") from None
        else:
            try:
                import torch
            except ImportError as e:
                raise ImportError(
                    f"Reading {path!r} needs PyTorch (`pip install torch`); a "
                    ".safetensors file can be read without it.") from e
            try:
                # weights_only: tensors and plain containers only; a pickle
                # that would run code (any other object) is refused, not run.
                state = torch.load(path, map_location="cpu", weights_only=True)
            except RuntimeError as e:   # torch's word for a torn archive
                raise ValueError(f"{path!r} is not a readable PyTorch file (truncated "
                                 f"or corrupt?): {str(e).splitlines()[0]}") from None
            except pickle.UnpicklingError as e:
                raise ValueError(
                    f"Refused to load {path!r}: it holds more than tensors "
                    "(objects whose unpickling could run code), and state dicts "
                    "are read with torch.load(weights_only=True). Convert a file "
                    "you trust to .safetensors. PyTorch said: "
                    f"{str(e).splitlines()[0]}") from None
            for key in ("state_dict", "model"):
                if isinstance(state, dict) and isinstance(state.get(key), dict):
                    state = state[key]
    else:
        state = source
    arrays = {}
    for name, value in state.items():
        if hasattr(value, "detach"):  # a torch tensor; bf16/fp16 -> float32
            value = value.detach().cpu().float().numpy()
        arrays[re.sub(r"^(module\.|model\.)", "", name)] = np.asarray(value)
    return arrays


def _conv_kernel(w):
    """torch `(out, in, kh, kw)` -> Keras `(kh, kw, in, out)`."""
    return np.transpose(w, (2, 3, 1, 0))


def _head(state):
    """The three head matrices as `(out, in...)` arrays, whichever layout."""
    if "classifier.0.weight" in state:
        names = ("classifier.0", "classifier.3", "classifier.6")
    elif "pre_logits.fc1.weight" in state:
        names = ("pre_logits.fc1", "pre_logits.fc2", "head.fc")
    else:
        return None
    return [(state[f"{n}.weight"], state[f"{n}.bias"]) for n in names]


def load_torch_weights(model, source):
    """Loads a torchvision or timm VGG state dict into a keras_vgg model.

    Conv kernels are transposed to Keras' layout; BatchNorm statistics are
    carried over; `fc1`, which torch applies to an NCHW feature map flattened
    as (channels, height, width), is reordered to the (height, width,
    channels) order of Keras' `Flatten`. The model must have
    the same configuration (and BatchNorm or not) as the state dict, and with
    its top a 224x224 input (torch's head sees a 7x7 feature map).

    Args:
        model: a model from `keras_vgg.VGG` (any `include_top`).
        source: a state dict or a path (see `read_state_dict`).

    Returns:
        `model`, with its weights replaced.

    Example:
    ```python
    model = keras_vgg.VGG("D", batch_norm=True)
    keras_vgg.load_torch_weights(model, "vgg16_bn-6c64b313.pth")
    ```
    """
    state = read_state_dict(source)
    conv_ids = sorted(int(m.group(1)) for k in state
                      if (m := re.fullmatch(r"features\.(\d+)\.weight", k))
                      and state[k].ndim == 4)
    convs = [layer for layer in model.layers
             if re.fullmatch(r"block\d+_conv\d+", layer.name)]
    if not conv_ids:
        raise ValueError("No VGG conv weights (`features.<i>.weight`) in the "
                         f"state dict; its keys start with {sorted(state)[:5]}.")
    if len(conv_ids) != len(convs):
        raise ValueError(
            f"The state dict has {len(conv_ids)} conv layers, model "
            f"{model.name!r} has {len(convs)}: build the matching config "
            "(VGG-11/13/16/19 have 8/10/13/16 convs).")
    bn_in_state = f"features.{conv_ids[0] + 1}.running_mean" in state
    bn_in_model = any(layer.name.startswith("block1_bn") for layer in model.layers)
    if bn_in_state != bn_in_model:
        raise ValueError(
            f"The state dict is {'with' if bn_in_state else 'without'} "
            f"BatchNorm; model {model.name!r} is "
            f"{'with' if bn_in_model else 'without'}. Build it with "
            f"batch_norm={bn_in_state}.")

    for i, conv in zip(conv_ids, convs):
        kernel = _conv_kernel(state[f"features.{i}.weight"])
        _assign(conv, [kernel, state[f"features.{i}.bias"]], f"features.{i}")
        if bn_in_model:
            bn = f"features.{i + 1}"
            _assign(model.get_layer(conv.name.replace("_conv", "_bn")),
                    [state[f"{bn}.{p}"] for p in
                     ("weight", "bias", "running_mean", "running_var")], bn)

    names = {layer.name for layer in model.layers}
    if "fc1" not in names:
        return model
    head = _head(state)
    if head is None:
        raise ValueError(f"Model {model.name!r} has a classifier but the state "
                         "dict has none (no `classifier.*` or `pre_logits.*` "
                         "keys); build the model with include_top=False.")
    (w1, b1), (w2, b2), (w3, b3) = head
    depth = convs[-1].filters
    # torchvision's Linear or timm's conv, in torch's (c, h, w) order, to the
    # (h, w, c) order Keras' Flatten uses in either data format.
    w1 = np.transpose(w1.reshape(w1.shape[0], depth, 7, 7), (0, 2, 3, 1))
    if model.get_layer("fc1").kernel.shape[0] != w1[0].size:
        raise ValueError(
            f"fc1 of model {model.name!r} takes {model.get_layer('fc1').kernel.shape[0]} "
            f"features; torch's takes a 7x7x{depth} map ({w1[0].size}). Build the "
            "model with a 224x224 input.")
    _assign(model.get_layer("fc1"), [w1.reshape(w1.shape[0], -1).T, b1], "fc1")
    _assign(model.get_layer("fc2"), [w2.reshape(w2.shape[0], -1).T, b2], "fc2")
    _assign(model.get_layer("predictions"), [w3.reshape(w3.shape[0], -1).T, b3],
            "predictions")
    return model


def _assign(layer, arrays, source_name):
    expected = [tuple(w.shape) for w in layer.weights]
    received = [tuple(a.shape) for a in arrays]
    if expected != received:
        raise ValueError(
            f"Shape mismatch loading {source_name} into layer {layer.name!r}: "
            f"the layer has {expected}, the state dict gives {received}.")
    layer.set_weights(arrays)
