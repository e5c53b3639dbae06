"""`python export/export_vgg.py ...` in a clone: the same program as the installed
`keras-vgg-export` command and `python -m keras_vgg.export.export_vgg` (see that module)."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

if __name__ == "__main__":
    from keras_vgg.export.export_vgg import run
    run()
