"""`python recipes/explain.py ...` in a clone: the same program as the installed
`keras-vgg-explain` command and `python -m keras_vgg.recipes.explain` (see that module)."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

if __name__ == "__main__":
    from keras_vgg.recipes.explain import run
    run()
