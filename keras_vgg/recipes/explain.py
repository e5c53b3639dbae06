r"""Look inside a trained VGG: Grad-CAM overlays, feature maps, filter patterns.

```
keras-vgg-explain --model=runs/smoke/model.keras --images=photos/ --output=out
keras-vgg-explain --model=vgg16 --weights=imagenet --images='*.jpg' --output=out
keras-vgg-explain --model=run/model.keras --images=a.png --mode=features --output=out
keras-vgg-explain --model=run/model.keras --mode=filters --layer=block1_conv1,block4_conv2 \
    --output=out
```

The same as `python recipes/explain.py ...` in a clone, or
`python -m keras_vgg.recipes.explain ...`. Images go through the test-time
preprocessing of evaluation and export (`keras_vgg.recipes.data`: decode, the
central crop at scale Q, or the whole image rescaled to Q for models of any
input size; the mean RGB of the run's summary.json), so the model sees what
it saw in evaluation. Modes:

* `gradcam`: per image, `<name>_gradcam.png` with the image, its Grad-CAM
  heatmap overlaid (`keras_vgg.explain.grad_cam`) and the top-5 classes, and
  `predictions.json` with the same numbers.
* `features`: per image and layer, `<name>_<layer>.png`, a grid of the
  layer's feature maps (default: the last conv layer of each block).
* `filters`: per layer, `filters_<layer>.png`, a grid of the patterns that
  maximise its first `--filters` filters (`keras_vgg.explain.filter_patterns`).
"""

import glob
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
MODES = ("gradcam", "features", "filters")
PRETRAINED_MODELS = ("vgg16", "vgg19")


class ExplainError(Exception):
    """The command cannot run as asked; the message says why."""


def define_flags():
    flags.DEFINE_boolean(
        "trust_model_code", False, "Load .keras files even when they hold "
        "code that runs on loading (a Lambda layer); by default such "
        "files, which may come from strangers, are refused.")
    flags.DEFINE_string("model", None, "A `.keras` file made by a recipe (or "
                        "any keras_vgg model), or vgg16/vgg19 with "
                        "--weights=imagenet.")
    flags.DEFINE_enum("weights", None, ["imagenet"], "With --model=vgg16 or "
                      "vgg19: the pretrained ImageNet weights (a cached copy "
                      "works offline).")
    flags.DEFINE_list("images", [], "Image files, globs or folders "
                      "(comma-separated); JPEG, PNG, BMP or GIF.")
    flags.DEFINE_string("output", None, "Folder for the PNGs (created).")
    flags.DEFINE_enum("mode", "gradcam", MODES, "What to draw.")
    flags.DEFINE_list("layer", [], "Layer(s): for gradcam one (default: the "
                      "last conv layer of block 5); for features and filters "
                      "one grid each (default: the last conv layer of each "
                      "block).")
    flags.DEFINE_integer("class_index", None, "gradcam: the class to explain "
                         "(default: each image's top class).", lower_bound=0)
    flags.DEFINE_integer("scale", 0, "Q, the smallest image side after "
                         "rescaling (default: the run's eval_scale from "
                         "summary.json, else 256).", lower_bound=0)
    flags.DEFINE_string("mean_rgb", "auto", "Mean RGB subtracted: 'auto' (the "
                        "run's summary.json, else ImageNet's), 'imagenet' or "
                        "'R,G,B'.")
    flags.DEFINE_integer("filters", 16, "filters: patterns per layer.",
                         lower_bound=1)
    flags.DEFINE_integer("filter_size", 64, "filters: side of each pattern.",
                         lower_bound=32)
    flags.DEFINE_integer("filter_steps", 30, "filters: gradient ascent steps.",
                         lower_bound=1)
    flags.DEFINE_integer("batch_size", 16, "Images per forward and backward "
                         "pass.", lower_bound=1)
    flags.DEFINE_integer("top", 5, "gradcam: classes listed per image.",
                         lower_bound=1)
    flags.mark_flags_as_required(["model", "output"])
    flags.register_validator(
        "mean_rgb", lambda v: v in ("auto", "imagenet") or len(v.split(",")) == 3,
        message="--mean_rgb must be 'auto', 'imagenet' or three numbers 'R,G,B'.")


def load_model(name, weights, trust=False):
    """The model, from a `.keras` file or (vgg16/vgg19) pretrained weights."""
    import keras_vgg  # registers the custom layers, so `.keras` files load

    if weights == "imagenet":
        if name.lower() not in PRETRAINED_MODELS:
            raise ExplainError(f"--weights=imagenet needs --model=vgg16 or "
                               f"vgg19. Received: --model={name}")
        try:
            return getattr(keras_vgg, name.upper())(weights="imagenet")
        except RuntimeError as e:   # offline without the cached file: says what to do
            raise ExplainError(str(e)) from None
    if not os.path.exists(name):
        raise ExplainError(f"--model: no such file: {name} (a .keras file, or "
                           "vgg16/vgg19 with --weights=imagenet)")
    from keras_vgg.recipes import runs
    try:
        return runs.load_model(name, trust)
    except ValueError as e:
        raise ExplainError(str(e)) from None


def class_names(model, summary):
    """Names of the model's outputs: ImageNet's, the run's folder names, or
    the indices."""
    import keras_vgg

    classes = int(model.output.shape[-1])
    if summary.get("class_names") and len(summary["class_names"]) == classes:
        return [str(n) for n in summary["class_names"]]
    if classes == 1000:
        return [name for _, name in keras_vgg.imagenet_classes()]
    return [str(i) for i in range(classes)]


def list_images(entries):
    """Image files from files, globs and folders, in order, each once."""
    from keras_vgg.recipes.sources import IMAGE_EXTENSIONS

    files = []
    for entry in entries:
        path = pathlib.Path(entry).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif glob.has_magic(entry):
            found = sorted(pathlib.Path(p) for p in glob.glob(str(path)))
        elif path.is_file():
            found = [path]
        else:
            raise ExplainError(f"--images: no such file or folder: {entry}")
        if not found:
            raise ExplainError(f"--images: no {'/'.join(IMAGE_EXTENSIONS)} "
                               f"images in {entry}")
        files += [f for f in found if f not in files]
    return files


class Preprocess:
    """Evaluation's test-time preprocessing, from `keras_vgg.recipes.data`:
    the central crop at scale Q for a model of fixed input size (as the
    single-crop protocol and training's validation do), else the whole image
    rescaled to Q (as dense evaluation and the exported model do)."""

    def __init__(self, model, scale, mean_rgb):
        shape = tuple(model.input.shape[1:])
        if len(shape) != 3 or shape[-1] != 3:
            raise ExplainError(f"Model {model.name!r} takes inputs of shape "
                               f"{shape}; the command feeds (height, width, 3) "
                               "channels_last images.")
        self.size = shape[0] if shape[0] is not None and shape[0] == shape[1] else None
        self.scale, self.mean_rgb = scale, mean_rgb

    def __call__(self, path):
        """(the RGB image the model sees, in [0, 255]; its model input)."""
        import tensorflow as tf

        from keras_vgg.recipes import data as data_lib

        encoded = tf.io.read_file(str(path))
        try:
            if self.size:
                image = data_lib.crop(encoded, self.scale, self.size)
            else:
                image = data_lib.rescale(data_lib.decode(encoded), self.scale)
        except tf.errors.InvalidArgumentError as e:
            raise ExplainError(f"Cannot decode {path}: {e.message}") from None
        return image.numpy(), data_lib.normalize(image, self.mean_rgb).numpy()


def prepare(model_path, weights=None, mean_rgb="auto", scale=0, trust=False):
    """(the model, its `Preprocess`, its class names), from the run beside
    `model_path` where there is one (summary.json: mean RGB, Q, class
    names)."""
    from keras_vgg.recipes import data as data_lib
    from keras_vgg.recipes import runs

    model = load_model(model_path, weights, trust)
    if weights:   # no run beside it: ImageNet's mean, Q = 256
        summary = {}
        mean = data_lib.parse_mean_rgb("imagenet" if mean_rgb == "auto" else mean_rgb)
    else:
        summary = runs.summary_of(model_path)
        mean = runs.model_mean(model_path, mean_rgb)
    preprocess = Preprocess(model, scale or summary.get("eval_scale", 256), mean)
    return model, preprocess, class_names(model, summary)


def _batches(files, size, same_shape):
    step = size if same_shape else 1   # images of any size go one by one
    for start in range(0, len(files), step):
        yield files[start:start + step]


def _unique_stems(files):
    stems, seen = [], {}
    for f in files:
        seen[f.stem] = seen.get(f.stem, 0) + 1
        stems.append(f.stem if seen[f.stem] == 1 else f"{f.stem}_{seen[f.stem]}")
    return stems


def _probabilities(outputs):
    """The model's outputs as probabilities: softmax applied to a model
    that outputs logits (classifier_activation=None)."""
    import numpy as np

    outputs = np.asarray(outputs, "float64")
    if (outputs >= 0).all() and np.allclose(outputs.sum(-1), 1, atol=1e-3):
        return outputs
    exp = np.exp(outputs - outputs.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


def explain_gradcam(model, files, preprocess, names, output, layer, class_index,
                    top, batch_size, progress):
    import numpy as np

    from keras_vgg import explain
    from keras_vgg.recipes import explain_figures

    layer_name = layer or explain.default_layer(model)
    stems = iter(_unique_stems(files))
    written, predictions = [], {}
    for batch in _batches(files, batch_size, preprocess.size):
        shown, x = map(np.stack, zip(*(preprocess(f) for f in batch)))
        probabilities = _probabilities(model.predict(x, verbose=0))
        ranked = np.argsort(-probabilities, axis=-1)[:, :top]
        chosen = ranked[:, 0] if class_index is None else class_index
        heatmaps = explain.grad_cam(model, x, chosen, layer_name,
                                    batch_size=batch_size)
        for i, path in enumerate(batch):
            best = [(names[c], float(probabilities[i, c])) for c in ranked[i]]
            explained = names[int(np.broadcast_to(chosen, len(batch))[i])]
            out = output / f"{next(stems)}_gradcam.png"
            explain_figures.gradcam_figure(out, shown[i], heatmaps[i], best,
                                           explained, layer_name)
            predictions[str(path)] = {"explained": explained, "layer": layer_name,
                                      "top": best, "figure": out.name}
            written.append(out)
        progress.add(len(batch))
    summary = output / "predictions.json"
    summary.write_text(json.dumps(predictions, indent=2) + "\n")
    return written + [summary]


def explain_features(model, files, preprocess, output, layers, batch_size, progress,
                     max_maps=32):
    from keras_vgg import explain
    from keras_vgg.recipes import explain_figures

    written = []
    for path, stem in zip(files, _unique_stems(files)):
        _, x = preprocess(path)
        maps = explain.feature_maps(model, x[None], layers or None,
                                    batch_size=batch_size)
        for name, activation in maps.items():
            channels = activation[0].transpose(2, 0, 1)[:max_maps]
            out = output / f"{stem}_{name}.png"
            explain_figures.grid_figure(
                out, list(channels), f"{path.name}: {name}, {activation.shape[1]}x"
                f"{activation.shape[2]}, first {len(channels)} of "
                f"{activation.shape[-1]} maps", cmap="viridis")
            written.append(out)
        progress.add(1)
    return written


def explain_filters(model, output, layers, count, size, steps, progress):
    from keras_vgg import explain
    from keras_vgg.recipes import explain_figures

    written = []
    for name in layers:
        try:
            depth = model.get_layer(name).output.shape[-1]
        except ValueError:   # filter_patterns names the layers there are
            depth = count
        found = explain.filter_patterns(model, name, range(min(count, depth)),
                                        size=size, steps=steps)
        out = output / f"filters_{name}.png"
        gain = found.activations[-1] - found.activations[0]
        explain_figures.grid_figure(
            out, list(found.images), f"{name}: inputs maximising filters 0-"
            f"{len(found.images) - 1} ({steps} steps of gradient ascent)",
            labels=[f"#{i} +{g:.2g}" for i, g in enumerate(gain)])
        written.append(out)
        progress.add(1)
    return written


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import keras

    from keras_vgg import explain
    from keras_vgg.recipes import sources

    start = time.time()
    try:
        if FLAGS.mode != "filters" and not FLAGS.images:
            raise ExplainError(f"--mode={FLAGS.mode} needs --images (files, "
                               "globs or folders).")
        if FLAGS.mode == "gradcam" and len(FLAGS.layer) > 1:
            raise ExplainError(f"--mode=gradcam explains at one layer. "
                               f"Received: --layer={','.join(FLAGS.layer)}")
        files = list_images(FLAGS.images) if FLAGS.mode != "filters" else []
        model, preprocess, names = prepare(FLAGS.model, FLAGS.weights,
                                           FLAGS.mean_rgb, FLAGS.scale,
                                           FLAGS.trust_model_code)
        if FLAGS.class_index is not None and FLAGS.class_index >= len(names):
            raise ExplainError(f"--class_index={FLAGS.class_index} out of range: "
                               f"the model has {len(names)} classes.")
        output = pathlib.Path(FLAGS.output)
        output.mkdir(parents=True, exist_ok=True)
        layers = FLAGS.layer or (explain.block_layers(model)
                                 if FLAGS.mode == "filters" else [])
        progress = keras.utils.Progbar(len(layers) if FLAGS.mode == "filters"
                                       else len(files), unit_name="layer"
                                       if FLAGS.mode == "filters" else "image")
        if FLAGS.mode == "gradcam":
            written = explain_gradcam(model, files, preprocess, names, output,
                                      FLAGS.layer[0] if FLAGS.layer else None,
                                      FLAGS.class_index, FLAGS.top,
                                      FLAGS.batch_size, progress)
        elif FLAGS.mode == "features":
            written = explain_features(model, files, preprocess, output, layers,
                                       FLAGS.batch_size, progress)
        else:
            written = explain_filters(model, output, layers, FLAGS.filters,
                                      FLAGS.filter_size, FLAGS.filter_steps,
                                      progress)
    except (ExplainError, sources.DataError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(f"Wrote {len(written)} files to {output} in {time.time() - start:.1f} s.")


def run():
    """The `keras-vgg-explain` console command."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
