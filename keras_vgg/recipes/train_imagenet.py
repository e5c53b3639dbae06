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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402

from keras_vgg.recipes import config  # noqa: E402


def main(argv):
    def job():
        cfg = config.train_config()
        from keras_vgg.recipes import training
        return training.train(cfg)

    config.run_job(argv, job)


def run():
    """The `keras-vgg-train` console command."""
    config.define_train_flags()
    app.run(main)


if __name__ == "__main__":
    run()
