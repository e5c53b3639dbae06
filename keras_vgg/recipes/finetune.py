r"""Moves a trained VGG to your own images (the paper's Appendix B, and
fine-tuning as people do it today): `keras_vgg.recipes.transfer`.

`keras-vgg-finetune` once installed, `python recipes/finetune.py` in a clone,
or `python -m keras_vgg.recipes.finetune`: the same flags.

```
# A folder of class subfolders (train/ and val/, or every 10th image held out):
python recipes/finetune.py --dataset=folder:~/my_images --model_dir=runs/mine
# The paper's protocol on Caltech-101, networks D and E stacked:
python recipes/finetune.py --dataset=caltech101 --strategy=svm \
    --weights=vgg16.keras,vgg19.keras --scales=256,384,512 --model_dir=runs/caltech
# Fine-tuning VGG-16 from ImageNet on Oxford Flowers:
python recipes/finetune.py --dataset=oxford_flowers102 --strategy=finetune \
    --weights=imagenet --model=D --unfreeze_from=block4_conv1 --model_dir=runs/flowers
# The offline comparison of every strategy on scikit-learn's digits:
python recipes/finetune.py --smoke
```

A killed run (even `kill -9`) resumes where it stopped when started again
with the same `--model_dir`; cached outputs are reused.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from keras_vgg.recipes import config  # noqa: E402


def main(argv):
    def job():
        if flags.FLAGS.smoke:
            from keras_vgg.recipes import transfer_smoke
            return transfer_smoke.run(flags.FLAGS.model_dir or transfer_smoke.DEFAULT_DIR,
                                      cpu_replicas=flags.FLAGS.cpu_replicas or 2)
        cfg = config.transfer_config()
        from keras_vgg.recipes import transfer
        return transfer.transfer(cfg)

    config.run_job(argv, job)


def run():
    """The `keras-vgg-finetune` console command."""
    config.define_finetune_flags()
    app.run(main)


if __name__ == "__main__":
    run()
