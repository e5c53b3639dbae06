"""A model as its chain of layers, re-applied in one graph.

VGG is a chain of layers; so are `fully_convolutional` models and heads
stacked on a backbone, functionally, as a nested model or in a Sequential.
`keras_vgg.explain` cuts such a chain at a layer (to take gradients there)
and needs every layer's output in one graph, whatever graphs the layers were
first called in: `Chain` re-applies the layers, shared, to a fresh input.
"""

import re

import keras
from keras import ops

_DEFAULT_LAYER = re.compile(r"block5_(conv|relu)\d+")


class Chain:
    """A model's layers in order, nested models' layers in their place,
    re-applied to a fresh input; `inputs` and `outputs` map each layer's name
    to its input and output tensors in that graph.

    `upto` stops after that layer; `any_size` makes the input's height and
    width free when no layer up to there needs the model's size (Flatten).
    """

    def __init__(self, model, upto=None, any_size=False):
        self.name = model.name
        self.layers = chain_layers(model)
        names = [layer.name for layer in self.layers]
        if upto is not None:
            self.layers = self.layers[:names.index(upto) + 1]
        shape = tuple(model.inputs[0].shape)
        self.data_format = next(
            (layer.data_format for layer in self.layers
             if isinstance(layer, keras.layers.Conv2D)),
            keras.config.image_data_format())
        self.axes = (1, 2) if self.data_format == "channels_last" else (2, 3)
        if any_size and not any(isinstance(layer, keras.layers.Flatten)
                                for layer in self.layers):
            shape = tuple(None if i in self.axes else d for i, d in enumerate(shape))
        self.shape = shape
        x = self.input = keras.Input(batch_shape=shape)
        self.inputs, self.outputs = {}, {}
        for layer in self.layers:
            self.inputs[layer.name] = x
            x = self.outputs[layer.name] = layer(x)
        self.output = x

    def layer(self, name, spatial=False):
        """The layer called `name`, checked to output a spatial map."""
        layer = next((layer for layer in self.layers if layer.name == name), None)
        if layer is None:
            raise ValueError(
                f"No layer {name!r} in model {self.name!r}. Received: layer="
                f"{name!r}. Allowed (conv layers): {self.conv_names()}")
        shape = tuple(self.outputs[name].shape)
        if spatial and len(shape) != 4:
            raise ValueError(
                f"Layer {name!r} of model {self.name!r} outputs shape {shape}, "
                f"not a spatial map. Received: layer={name!r}. Allowed: a "
                f"layer of the conv stack, e.g. {self.conv_names()}")
        return layer

    def conv_names(self):
        return [layer.name for layer in self.layers
                if isinstance(layer, keras.layers.Conv2D)]

    def default_layer(self):
        """The last conv layer of block 5 (with BatchNorm, its ReLU)."""
        names = [layer.name for layer in self.layers
                 if _DEFAULT_LAYER.fullmatch(layer.name)]
        if not names:
            raise ValueError(
                f"Model {self.name!r} has no block 5 conv layer (block5_conv*); "
                f"pass layer=<name>. Conv layers: {self.conv_names()}")
        return names[-1]

    def block_ends(self):
        """The last layer of each block, before its pooling."""
        return [before.name for before, after in zip(self.layers, self.layers[1:])
                if after.name.startswith("block") and after.name.endswith("_pool")]

    def scores(self):
        """(the tensor the class scores come from, the function from it to
        the scores before any classifier activation)."""
        last = self.layers[-1]
        if isinstance(last, keras.layers.Dense) and \
                last.activation is not keras.activations.linear:
            # Softmax (or any activation): the logits from the layer's own
            # weights on its input.
            def logits(t, dense=last):
                t = ops.matmul(ops.cast(t, dense.kernel.dtype), dense.kernel)
                return t if dense.bias is None else t + dense.bias
            return self.inputs[last.name], logits
        if isinstance(last, _ACTIVATIONS):
            return self.inputs[last.name], _identity
        if isinstance(last, keras.layers.GlobalAveragePooling2D) and \
                len(self.layers) > 1 and isinstance(self.layers[-2], _ACTIVATIONS):
            # fully_convolutional: the class score map before its softmax,
            # averaged over space.
            axes = (1, 2) if last.data_format == "channels_last" else (2, 3)
            return self.inputs[self.layers[-2].name], \
                lambda t: ops.mean(t, axis=axes)
        return self.output, _identity


_ACTIVATIONS = (keras.layers.Activation, keras.layers.Softmax)


def _identity(t):
    return t


def chain_layers(model):
    """The model's layers in calling order, nested models' layers in their
    place; a `ValueError` unless each layer takes the previous one's output."""
    if len(model.inputs) != 1:
        raise ValueError(f"Model {model.name!r} has {len(model.inputs)} inputs; "
                         "keras_vgg.explain needs a model of one image input.")
    layers, previous = [], model.inputs[0]
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        # The node of this model's graph: a layer may have been called in
        # other graphs too (feature extractors, earlier chains).
        node = next((n for n in layer._inbound_nodes
                     if len(n.input_tensors) == 1
                     and n.input_tensors[0] is previous), None)
        if node is None:
            raise ValueError(
                f"Model {model.name!r} is not a single chain of layers: layer "
                f"{layer.name!r} does not take the previous layer's output. "
                "keras_vgg.explain follows a VGG's chain of layers, and any "
                "head built on it functionally or as a nested model.")
        previous = node.output_tensors[0]
        layers += chain_layers(layer) if isinstance(layer, keras.Model) else [layer]
    return layers
