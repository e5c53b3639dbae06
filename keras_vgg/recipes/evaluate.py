r"""Command line of the paper's testing protocols (`keras_vgg.recipes.evaluation`).

```
keras-vgg-evaluate --model=vgg16.keras --protocol=dense --scales=256,384,512
keras-vgg-evaluate --model=D.keras,E.keras --protocol=dense+multicrop \
    --scales=256,384,512 --output=fusion.json
```

The same as `python recipes/evaluate.py ...` in a clone, or
`python -m keras_vgg.recipes.evaluate ...`.
"""

import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from keras_vgg.recipes import config  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    from keras_vgg.recipes.evaluation import PROTOCOLS

    config.define_data_flags()
    flags.DEFINE_list("model", None, "Trained model(s), `.keras` files made "
                      "by train_imagenet.py; several (comma-separated) are "
                      "fused by averaging their posteriors.")
    flags.DEFINE_list("protocol", ["dense"], "Protocol(s), comma-separated: "
                      f"{', '.join(PROTOCOLS)}.")
    flags.DEFINE_list("scales", ["256"], "Test scales Q (smallest image side), "
                      "e.g. 256,384,512; posteriors are averaged over them.")
    flags.DEFINE_string("split", None, "The split to evaluate (default: the "
                        "dataset's validation split, else test).")
    flags.DEFINE_integer("batch_size", 64, "Images per batch (crops per batch "
                         "for multicrop).", lower_bound=1)
    flags.DEFINE_integer("max_images", 0, "Evaluate only the first N images "
                         "(0: all).", lower_bound=0)
    flags.DEFINE_string("output", "", "JSON file for the results (default: "
                        "eval.json beside the first model).")
    flags.mark_flag_as_required("model")
    flags.register_validator(
        "protocol", lambda v: all(p in PROTOCOLS for p in v),
        message=f"--protocol must list names from {', '.join(PROTOCOLS)}.")
    flags.register_validator(
        "scales", lambda v: all(s.isdigit() and int(s) > 0 for s in v),
        message="--scales must be positive integers, e.g. 256,384,512.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from keras_vgg.recipes import evaluation, runs, screening, sources

    missing = [p for p in FLAGS.model if not os.path.exists(p)]
    if missing:
        sys.exit(f"error: --model: no such file(s): {', '.join(missing)}")
    try:
        # The models first: a refused or broken file fails before any data is read.
        models = [runs.load_model(p, FLAGS.trust_model_code) for p in FLAGS.model]
        output = FLAGS.output or str(pathlib.Path(FLAGS.model[0]).with_name("eval.json"))
        source = screening.screen(
            sources.load_source(FLAGS.dataset, FLAGS.data_dir, FLAGS.manual_dir,
                                val_split=FLAGS.split, download=FLAGS.download),
            pathlib.Path(output).parent, FLAGS.strict_data, splits=("val",))
        means = [runs.model_mean(p, FLAGS.mean_rgb) for p in FLAGS.model]
        results = evaluation.evaluate_models(
            models, source.val, FLAGS.protocol, [int(s) for s in FLAGS.scales],
            means, FLAGS.batch_size, FLAGS.max_images)
    except (sources.DataError, evaluation.EvaluationError, ValueError) as e:
        sys.exit(f"error: {e}")
    results.update(dataset=source.name, split=source.val.name,
                   model_files=list(FLAGS.model))
    pathlib.Path(output).write_text(json.dumps(results, indent=2) + "\n")
    print(evaluation.format_results(results))
    print(f"Wrote {output}")


def run():
    """The `keras-vgg-evaluate` console command."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
