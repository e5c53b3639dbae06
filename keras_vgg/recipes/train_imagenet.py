r"""Trains a VGG as Simonyan & Zisserman (2015) did, section 3.1.

`keras-vgg-train` once installed, `python recipes/train_imagenet.py` in a
clone, or `python -m keras_vgg.recipes.train_imagenet`: the same flags.

The smoke run (a few minutes on 2 CPU cores, no download; 2 CPU replicas,
scikit-learn's handwritten digits as a folder dataset, evaluation at the end):

```
python recipes/train_imagenet.py --smoke
```

The paper's configuration D at S=256 on ImageNet (one machine, all its GPUs;
ImageNet prepared by TFDS from the tars in --manual_dir on the first run):

```
python recipes/train_imagenet.py --model=D --scale=256 \
    --manual_dir=~/imagenet_tars --model_dir=runs/vgg16_s256
```

Scale jittering (S in [256, 512]), warm-started from a trained config A:

```
python recipes/train_imagenet.py --model=E --scale=256,512 \
    --init_from=runs/vgg11/model.keras --model_dir=runs/vgg19_jitter
```

Several machines: the same command on each, with `TF_CONFIG` naming the
cluster and this machine's task (MultiWorkerMirroredStrategy). A killed run
(even `kill -9`) resumes from its last completed epoch when started again with
the same `--model_dir`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from keras_vgg.recipes import config  # noqa: E402


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        # TensorFlow logs every all-reduce at INFO through absl; keep the
        # console to progress bars and the recipe's own messages.
        logging.set_verbosity(logging.WARNING)
    cfg = config.train_config()
    from keras_vgg.recipes import callbacks, distribute
    from keras_vgg.recipes import data as data_lib
    from keras_vgg.recipes import training
    try:
        training.train(cfg)
    except (data_lib.DataError, distribute.DistributeError,
            callbacks.TrainingError) as e:
        print(f"\nerror: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


def run():
    """The `keras-vgg-train` console command."""
    config.define_train_flags()
    app.run(main)


if __name__ == "__main__":
    run()
