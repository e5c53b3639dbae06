"""What a training run left beside its model: `summary.json` (written by
`keras_vgg.recipes.training.train` next to `model.keras`).

Evaluation and the explain command read from it what the model was trained
with, so they feed it the inputs it was trained on.
"""

import json
import pathlib


def summary_of(model_path):
    """The run's summary dict beside `model_path`, or `{}` when there is none
    (a model not made by a recipe)."""
    summary = pathlib.Path(model_path).with_name("summary.json")
    return json.loads(summary.read_text()) if summary.exists() else {}


def model_mean(path, flag_value):
    """The mean RGB a model was trained with: `--mean_rgb`, or its run's
    summary.json, or ImageNet's."""
    from keras_vgg.recipes import data as data_lib

    if flag_value not in (None, "auto"):
        return data_lib.parse_mean_rgb(flag_value)
    mean = summary_of(path).get("mean_rgb")
    return tuple(mean) if mean else data_lib.IMAGENET_MEAN_RGB
