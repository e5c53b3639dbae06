"""Command lines of the recipes: bad flags and missing data give clear errors,
every flag has help. The processes run side by side to save TF start-ups."""

import subprocess
import sys

import pytest
from test_recipes_helpers import ROOT, recipe_env

TRAIN, EVALUATE, FINETUNE = "train_imagenet.py", "evaluate.py", "finetune.py"

# (script, args, exit status, text the error must contain)
CASES = {
    "unknown config": (TRAIN, ["--model=F", "--model_dir=/tmp/x"], 1,
                       ["--model=F", "A, A-LRN, B, C, D, E"]),
    "bad scale": (TRAIN, ["--scale=256,384,512", "--model_dir=/tmp/x"], 1,
                  ["--scale", "256,512"]),
    "scale below crop": (TRAIN, ["--scale=200", "--model_dir=/tmp/x"], 1,
                         ["--scale=200 is smaller than --image_size=224"]),
    "no model_dir": (TRAIN, [], 1, ["--model_dir is required"]),
    "xla on cpu replicas": (TRAIN, ["--smoke", "--jit_compile"], 1,
                            ["--jit_compile with --cpu_replicas=2"]),
    "bad protocol": (TRAIN, ["--evaluate=tencrop", "--model_dir=/tmp/x"], 1,
                     ["tencrop", "single, dense, multicrop, dense+multicrop"]),
    "missing imagenet": (TRAIN, ["--model_dir={tmp}/run", "--data_dir={tmp}/tfds"],
                         1, ["error: ImageNet (TFDS 'imagenet2012') is not "
                             "prepared in {tmp}/tfds", "ILSVRC2012_img_train.tar",
                             "--manual_dir", "--smoke"]),
    "missing folder": (TRAIN, ["--model_dir={tmp}/run2",
                               "--dataset=folder:{tmp}/none"], 1,
                       ["error: Dataset folder", "does not exist"]),
    "eval needs a model": (EVALUATE, [], 1, ["--model"]),
    "eval missing model file": (EVALUATE, ["--model={tmp}/a.keras"], 1,
                                ["no such file", "a.keras"]),
    "eval bad protocol": (EVALUATE, ["--model=a.keras", "--protocol=dense,ten"], 1,
                          ["--protocol", "single, dense, multicrop"]),
    "finetune no model_dir": (FINETUNE, ["--weights={tmp}/tiny.keras"], 1,
                              ["--model_dir is required"]),
    "finetune bad strategy": (FINETUNE, ["--strategy=lora", "--model_dir=/tmp/x"], 1,
                              ["--strategy=lora", "<features|finetune|svm>"]),
    "finetune missing weights": (FINETUNE, ["--weights={tmp}/none.keras",
                                            "--model_dir={tmp}/f1"], 1,
                                 ["error: --weights='{tmp}/none.keras': no such file"]),
    "finetune other config": (FINETUNE, ["--weights={tmp}/a.weights.h5", "--model=E",
                                         "--widths=4,8,8,16,16", "--fc_units=32",
                                         "--model_dir={tmp}/f2"], 1,
                              ["does not fit the network --model=E"]),
    "finetune missing folder": (FINETUNE, ["--weights={tmp}/tiny.keras", "--model_dir={tmp}/f3",
                                           "--dataset=folder:{tmp}/none"], 1,
                                ["error: Dataset folder", "does not exist"]),
    "finetune one class": (FINETUNE, ["--weights={tmp}/tiny.keras", "--model_dir={tmp}/f4",
                                      "--dataset=folder:{tmp}/one"], 1,
                           ["at least 2", "Found: ['only']"]),
    "finetune unknown layer": (FINETUNE, ["--weights={tmp}/tiny.keras", "--model_dir={tmp}/f5",
                                          "--dataset=folder:{tmp}/two", "--strategy=finetune",
                                          "--unfreeze_from=block6_conv1"], 1,
                               ["--unfreeze_from='block6_conv1' is not a layer",
                                "block1_conv1", "predictions"]),
}


def write_inputs(tmp):
    """What the finetune cases need: a tiny VGG-11 as .keras and .weights.h5,
    a folder with one class, one with two."""
    import keras
    import numpy as np
    from PIL import Image

    import keras_vgg

    model = keras_vgg.VGG("A", classes=3, input_shape=(32, 32, 3),
                          widths=(4, 8, 8, 16, 16), fc_units=32)
    model.save(tmp / "tiny.keras")
    model.save_weights(tmp / "a.weights.h5")
    image = np.zeros((32, 32, 3), np.uint8)
    for folder in ("one/only", "two/a", "two/b"):
        (tmp / folder).mkdir(parents=True)
        for i in range(10):   # every 10th image is held out
            Image.fromarray(image + i).save(tmp / folder / f"{i}.png")
    keras.backend.clear_session()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    write_inputs(tmp)
    procs = {}
    for name, (script, args, _, _) in CASES.items():
        procs[name] = subprocess.Popen(
            [sys.executable, str(ROOT / "recipes" / script),
             *[a.format(tmp=tmp) for a in args]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=recipe_env())
    for script in (TRAIN, EVALUATE, FINETUNE):
        procs[script + " --helpfull"] = subprocess.Popen(
            [sys.executable, str(ROOT / "recipes" / script), "--helpfull"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=recipe_env())
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (proc.returncode, out, err)
    return tmp, results


@pytest.mark.parametrize("case", list(CASES))
def test_bad_command_lines_give_clear_errors(outcomes, case):
    tmp, results = outcomes
    _, _, status, needed = CASES[case]
    code, out, err = results[case]
    assert code == status, (code, out[-2000:], err[-2000:])
    for text in needed:
        assert text.format(tmp=tmp) in out + err, (text, err[-3000:])
    assert "Traceback" not in err, err[-3000:]


@pytest.mark.parametrize("script,expected", [
    (TRAIN, ["--model", "--batch_norm", "--dataset", "--data_dir", "--manual_dir",
             "--scale", "--init_from", "--cpu_replicas", "--mixed_precision",
             "--jit_compile", "--model_dir", "--smoke", "--learning_rate"]),
    (EVALUATE, ["--model", "--protocol", "--scales", "--output", "--dataset"]),
    (FINETUNE, ["--weights", "--strategy", "--dataset", "--warmup_epochs",
                "--unfreeze_from", "--base_lr_multiplier", "--train_bn", "--scales",
                "--aggregate", "--cache_dir", "--cpu_replicas", "--mixed_precision",
                "--model_dir", "--smoke", "--batch_norm", "--model"])])
def test_every_flag_has_help(outcomes, script, expected):
    code, out, err = outcomes[1][script + " --helpfull"]
    assert code in (0, 1) and "--model" in out, err[-2000:]   # absl exits 1
    sections = out.split("\n\n")
    ours = "\n".join(s for s in sections if "recipes" in s.split("\n")[0]
                     or "train_imagenet" in s or "evaluate" in s.split("\n")[0]
                     or "finetune" in s.split("\n")[0])
    for flag in expected:
        assert f"  {flag}" in ours or f",{flag}" in ours or \
            f"--[no]{flag[2:]}" in ours, flag
    assert "(no help available)" not in ours
