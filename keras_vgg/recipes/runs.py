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


def load_model(path, trust=False):
    """A `.keras` model from a file that may come from a stranger.

    Keras' safe mode refuses what would run code on loading (a `Lambda`
    layer's Python function); the error then says so and how to opt in.

    Args:
        path: the `.keras` file.
        trust: the user vouches for the file (`--trust_model_code`): load
            even what runs code.

    Raises:
        ValueError: the file is refused, or is not a loadable model.
    """
    import keras

    import keras_vgg  # noqa: F401  (registers the package's layers)

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=not trust)
    except Exception as e:  # Keras raises many kinds on a bad or unsafe archive
        text = str(e)
        if "safe_mode" in text or "unsafe" in text.lower():
            raise ValueError(
                f"Refused to load {str(path)!r}: it holds code that would run on "
                "loading (a Lambda layer). If you trust the file, pass "
                "--trust_model_code (in Python: keras_vgg.recipes.runs.load_model"
                "(path, trust=True)).") from None
        raise ValueError(f"{str(path)!r} is not a loadable .keras model: "
                         f"{text.splitlines()[0] if text else type(e).__name__}") from None

