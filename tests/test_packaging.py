"""The package as a user installs it: a wheel built from this tree, installed
with its extras into a fresh virtual environment, and every job run through
its console command (and `python -m`) from a folder outside the clone.
"""

import json
import os
import pathlib
import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

COMMANDS = ("keras-vgg-train", "keras-vgg-evaluate", "keras-vgg-export",
            "keras-vgg-explain", "keras-vgg-finetune")


def run(cmd, cwd, env=None, timeout=900):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, (cmd, result.stdout[-3000:], result.stderr[-3000:])
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin folder, a work folder outside the clone, the wheel's path,
    pip's output)."""
    tmp = tmp_path_factory.mktemp("wheel")
    built = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                 str(tmp / "dist"), str(ROOT)], cwd=tmp)
    wheel, = (tmp / "dist").glob("keras_vgg-*.whl")
    run([sys.executable, "-m", "venv", str(tmp / "venv")], cwd=tmp)
    bin_dir = tmp / "venv" / "bin"
    install = run([str(bin_dir / "python"), "-m", "pip", "install", "-q",
                   f"{wheel}[recipes,onnx]"], cwd=tmp, timeout=1800)
    work = tmp / "work"
    work.mkdir()
    return bin_dir, work, wheel, built.stdout + built.stderr + install.stderr


def user_env(bin_dir):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
               TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
    return env


def test_wheel_holds_the_package_alone_and_builds_without_warnings(installed):
    _, _, wheel, pip_output = installed
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("keras_vgg-")}
    assert tops == {"keras_vgg"}, tops
    assert "keras_vgg/data/imagenet_class_index.json" in names
    assert {"keras_vgg/recipes/train_imagenet.py", "keras_vgg/recipes/explain.py",
            "keras_vgg/export/export_vgg.py"} <= set(names)
    # (pip's notes on index locations of this machine's pip configuration
    # are not about the package.)
    warnings = [line for line in pip_output.splitlines() if "warning" in line.lower()
                and "is ignored: it is neither a file nor a directory" not in line]
    assert not warnings, warnings
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    for command in COMMANDS:
        assert command in text


def test_every_job_runs_from_outside_the_clone(installed):
    bin_dir, work, _, _ = installed
    env = user_env(bin_dir)
    python = str(bin_dir / "python")
    where = run([python, "-c", "import keras_vgg; print(keras_vgg.__file__)"],
                cwd=work, env=env).stdout.strip()
    assert where.startswith(str(bin_dir.parent)), where   # the wheel, not the clone
    run_dir = work / "run"
    run([str(bin_dir / "keras-vgg-train"), "--smoke", f"--model_dir={run_dir}",
         "--epochs=1", "--evaluate=single"], cwd=work, env=env)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_completed"] == 1 and "single" in summary["evaluation"]
    out = run([str(bin_dir / "keras-vgg-evaluate"), f"--model={run_dir / 'model.keras'}",
               f"--dataset=folder:{run_dir / 'data'}", "--protocol=single,dense",
               "--scales=36"], cwd=work, env=env).stdout
    assert "dense" in out and (run_dir / "eval.json").exists()
    out = run([str(bin_dir / "keras-vgg-export"), f"--model={run_dir / 'model.keras'}",
               f"--output={work / 'export'}", "--name=digits"], cwd=work, env=env).stdout
    version = pathlib.Path(out.strip().splitlines()[-1])
    assert (version / "saved_model.pb").exists() and (version / "model.onnx").exists()
    out = run([str(bin_dir / "keras-vgg-explain"), f"--model={run_dir / 'model.keras'}",
               f"--images={run_dir / 'data' / 'val' / '3'}", f"--output={work / 'explain'}"],
              cwd=work, env=env).stdout
    assert "Wrote" in out and list((work / "explain").glob("*_gradcam.png"))
    run([str(bin_dir / "keras-vgg-finetune"), f"--weights={run_dir / 'model.keras'}",
         f"--dataset=folder:{run_dir / 'data'}", "--epochs=1", "--batch_size=32",
         f"--model_dir={work / 'transfer'}"], cwd=work, env=env)
    summary = json.loads((work / "transfer" / "summary.json").read_text())
    assert summary["strategy"] == "features" and summary["held_out"]["images"] > 0
    for module in ("keras_vgg.recipes.train_imagenet", "keras_vgg.recipes.evaluate",
                   "keras_vgg.export.export_vgg", "keras_vgg.recipes.explain",
                   "keras_vgg.recipes.finetune"):
        result = subprocess.run([python, "-m", module, "--helpfull"], cwd=work, env=env,
                                capture_output=True, text=True, timeout=300)
        assert "--model" in result.stdout, (module, result.stderr[-2000:])
