"""What faces the world, sent what an attacker or a broken camera sends: the
exported `serve_image_bytes` refuses decompression bombs, lying headers and
oversized requests from the headers, before decoding, in bounded memory,
and keeps answering; and the fuzzer, kept: thousands of mutated images each
end in a result or an InvalidArgument, in a process that survives."""

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY
from hostile_images import (jpeg, jpeg_claiming, peak_mib, png, png_bomb, png_claiming,
                            reset_peak, rss_mib)

import keras_vgg
from keras_vgg.export import export_vgg
from keras_vgg.export.serving import DEFAULT_MAX_IMAGES, DEFAULT_MAX_PIXELS
from keras_vgg.recipes import data as data_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEAN = (90.0, 100.0, 110.0)   # not ImageNet's: the run's own, from summary.json


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny 10-class VGG-11 as a recipe leaves it (model.keras beside a
    summary.json with its mean RGB), exported, and its two signatures."""
    root = tmp_path_factory.mktemp("served")
    keras.utils.set_random_seed(4)
    model = keras_vgg.VGG11(classes=10, classifier_activation=None, **TINY)
    model.set_weights([w + np.random.default_rng(0).normal(0, 0.05, w.shape).astype("float32")
                       for w in model.get_weights()])
    model.save(root / "model.keras")
    (root / "summary.json").write_text(json.dumps({"mean_rgb": list(MEAN)}))
    result = export_vgg.export(str(root / "model.keras"), str(root / "out"), "tiny",
                               formats="saved_model", test_scale=224)
    loaded = tf.saved_model.load(result["path"])
    return {"bytes": loaded.signatures["serve_image_bytes"],
            "tensor": loaded.signatures["serving_default"], "path": result["path"],
            "result": result, "loaded": loaded}


def call(served, *files):
    return served["bytes"](image_bytes=tf.constant(list(files)))


def test_a_png_bomb_is_refused_from_its_header_in_bounded_memory(served):
    bomb = png_bomb()                  # 1.2 MB that decodes to 1.2 GB
    assert len(bomb) < 2_000_000
    normal = png(np.random.default_rng(0).integers(0, 255, (240, 300, 3)))
    before = call(served, normal)["probabilities"].numpy()
    reset_peak()
    rss = rss_mib()
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"at most {DEFAULT_MAX_PIXELS} pixels.*--max_pixels.*"
                             r"height, width.*20000.*20000"):
        call(served, normal, bomb)
    assert peak_mib() - rss < 200   # far from the 1.2 GB+ of decoding it
    # and it keeps answering, the same as before
    np.testing.assert_array_equal(call(served, normal)["probabilities"].numpy(), before)


def test_lying_and_truncated_headers_and_oversized_requests(served):
    small = np.random.default_rng(1).integers(0, 255, (60, 70, 3))
    for lie in (jpeg_claiming(jpeg(small), 20000, 20000),
                png_claiming(png(small), 30000, 30000)):
        with pytest.raises(tf.errors.InvalidArgumentError, match="at most 36000000 pixels"):
            call(served, lie)
    with pytest.raises(tf.errors.InvalidArgumentError, match="without its IHDR"):
        call(served, png(small)[:20])
    with pytest.raises(tf.errors.InvalidArgumentError, match="neither, of length"):
        call(served, b"GIF89a" + b"\0" * 20)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"at most {DEFAULT_MAX_IMAGES} images.*Received.*65"):
        call(served, *[png(small)] * (DEFAULT_MAX_IMAGES + 1))
    assert call(served, *[png(small)] * DEFAULT_MAX_IMAGES)["probabilities"].shape == (64, 10)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 10 times"):
        call(served, png(np.zeros((10, 101, 3))))      # a strip
    assert call(served, png(np.zeros((10, 100, 3))))["probabilities"].shape == (1, 10)
    assert served["result"]["serve_image_bytes"] == {
        "max_pixels": DEFAULT_MAX_PIXELS, "max_images": DEFAULT_MAX_IMAGES,
        "max_aspect_ratio": 10}


def test_the_limits_are_set_at_export(served, tmp_path):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(served["path"]))),
                        "model.keras")
    result = export_vgg.export(path, str(tmp_path), "strict", formats="saved_model",
                               test_scale=224, max_pixels=300 * 300, max_images=2)
    strict = tf.saved_model.load(result["path"]).signatures["serve_image_bytes"]
    ok, big = png(np.zeros((300, 300, 3))), png(np.zeros((300, 301, 3)))
    assert strict(image_bytes=tf.constant([ok, ok]))["probabilities"].shape == (2, 10)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 90000 pixels"):
        strict(image_bytes=tf.constant([big]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 2 images"):
        strict(image_bytes=tf.constant([ok] * 3))
    with pytest.raises(ValueError, match="max_pixels"):
        export_vgg.export(path, str(tmp_path), "bad", max_pixels=0)


def test_the_bytes_signature_subtracts_the_runs_own_mean(served):
    """A model trained with its dataset's mean is served with that mean
    (from the summary.json beside it), not ImageNet's."""
    image = np.random.default_rng(2).integers(0, 255, (230, 260, 3))
    encoded = png(image)
    got = call(served, encoded)["probabilities"].numpy()
    x = data_lib.normalize(data_lib.rescale(data_lib.decode(encoded), 224), MEAN)
    want = served["tensor"](images=x[None])["probabilities"].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    x = data_lib.normalize(data_lib.rescale(data_lib.decode(encoded), 224))  # ImageNet's
    imagenet = served["tensor"](images=x[None])["probabilities"].numpy()
    assert np.abs(imagenet - want).max() > 100 * 1e-5 * np.abs(want).max()


# --- the fuzzer ------------------------------------------------------------------

FUZZ = r"""
import json, os, sys, time
import numpy as np
sys.path.insert(0, {tests!r})
import tensorflow as tf
from hostile_images import jpeg, mutants, peak_mib, png, reset_peak, rss_mib
serve = tf.saved_model.load({path!r}).signatures["serve_image_bytes"]
rng = np.random.default_rng({seed})
import sklearn, PIL.Image
photo = np.asarray(PIL.Image.open(os.path.join(os.path.dirname(sklearn.__file__),
                   "datasets", "images", "china.jpg")))
seeds = [open(os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images",
                           "china.jpg"), "rb").read(),
         png(photo[:240, :300]), jpeg(photo[100:340, 200:530], 50),
         png(rng.integers(0, 255, (233, 250, 3)))]

plain = {{"answered": 0, "refused": 0}}

def request(batch):
    try:
        out = serve(image_bytes=tf.constant([d for _, d in batch]))["probabilities"].numpy()
        assert np.all(np.isfinite(out)), "non-finite output"
        return "answered"
    except tf.errors.InvalidArgumentError:
        return "refused"

for seed in seeds:   # each unmutated file alone (and the graph warmed up)
    plain[request([("as_is", seed)])] += 1
counts, worst, start = {{}}, 0.0, time.time()
cases = list(mutants(seeds, rng, {cases}))
# Each mutant alone, then mixed requests of 2-4, then an oversized one.
batches = [[case] for case in cases]
batches += [cases[i:i + int(rng.integers(2, 5))] for i in range(0, len(cases), 10)]
batches.append([("huge batch", seeds[1])] * 65)
for batch in batches:
    reset_peak()
    before = rss_mib()
    outcome = request(batch)
    worst = max(worst, peak_mib() - before)
    if len(batch) == 1 or batch[0][0] == "huge batch":
        for kind, _ in batch:
            counts.setdefault(kind, {{}}).setdefault(outcome, 0)
            counts[kind][outcome] += 1
# Still alive, and still right: a plain image answers.
serve(image_bytes=tf.constant([seeds[1]]))
print(json.dumps({{"images": sum(len(b) for b in batches), "requests": len(batches),
                  "counts": counts,
                  "unmutated_requests": plain,
                  "worst_request_mib": round(worst, 1),
                  "seconds": round(time.time() - start, 1)}}))
"""


def test_the_fuzzer(served):
    """Mutated JPEGs and PNGs (bit flips, truncations, lying headers, spliced
    files, other formats, empty strings, an oversized batch) in requests of
    1-4 images: each ends in a result or an InvalidArgument, the process
    survives, and no request takes more than 200 MiB. KERAS_VGG_FUZZ_CASES
    sets how many (300 in CI)."""
    cases = int(os.environ.get("KERAS_VGG_FUZZ_CASES", "300"))
    script = FUZZ.format(tests=os.path.dirname(os.path.abspath(__file__)),
                         path=served["path"], seed=0, cases=cases)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=3600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print("fuzz report:", json.dumps(report))
    counts = report["counts"]
    assert report["requests"] > cases, report
    assert {k for kinds in counts.values() for k in kinds} <= {"answered", "refused"}, counts
    assert counts["huge batch"] == {"refused": 65}, counts
    # Unmutated images are all answered; lying headers get refused.
    assert report["unmutated_requests"] == {"answered": 4, "refused": 0}, report
    assert counts["as_is"].get("refused", 0) == 0, counts
    assert counts["lie"].get("refused", 0) > 0, counts
    assert report["worst_request_mib"] < 200, report


# --- bad files in a training folder ---------------------------------------------------

@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory):
    """scikit-learn's digits as a folder, plus what real folders hold: an
    empty file, a truncated JPEG, text named .jpg, a PNG whose header lies."""
    from keras_vgg.recipes import sources

    root = sources.write_digits(tmp_path_factory.mktemp("messy") / "digits")
    photo = np.random.default_rng(3).integers(0, 255, (48, 40, 3))
    bad = {root / "train" / "3" / "empty.png": b"",
           root / "train" / "5" / "cut.jpg": jpeg(photo)[:300],
           root / "train" / "7" / "notes.jpg": b"these are my notes",
           root / "val" / "1" / "lies.png": png_claiming(png(photo), 4000, 4000)}
    for path, data in bad.items():
        path.write_bytes(data)
    return root, sorted(str(p) for p in bad)


def test_bad_files_are_found_named_and_skipped(messy_folder, tmp_path):
    from keras_vgg.recipes import screening, sources, training

    root, bad = messy_folder
    found = screening.unreadable(sources.load_source(f"folder:{root}").train)
    assert sorted(path for path, _ in found) == bad[:3]
    assert all(reason for _, reason in found)
    cfg = training.TrainConfig(model_dir=str(tmp_path / "run"), dataset=f"folder:{root}",
                               model="A", widths=TINY["widths"], fc_units=TINY["fc_units"],
                               image_size=32, scale=(32, 36), batch_size=64, epochs=1,
                               steps_per_epoch=3, init="glorot", verbose=0,
                               evaluate_at_end=("single",))
    summary = training.train(cfg)     # does not crash mid-epoch
    assert summary["epochs_completed"] == 1
    report = json.loads((tmp_path / "run" / screening.REPORT).read_text())
    assert sorted(p for entry in report.values() for p, _ in entry["unreadable"]) == bad
    # --strict_data stops before the first step, naming the files.
    with pytest.raises(sources.DataError, match=r"(?s)3 of the \d+ images.*do not decode.*"
                                                r"--strict_data.*empty\.png: Input is empty"):
        training.train(dataclasses.replace(cfg, model_dir=str(tmp_path / "strict"),
                                           strict_data=True))
    assert not (tmp_path / "strict" / "history.csv").exists()
    assert (tmp_path / "strict" / screening.REPORT).exists()   # the list it points to


def test_evaluate_skips_bad_files_too(messy_folder, tmp_path):
    root, bad = messy_folder
    model = keras_vgg.VGG("A", classes=10, input_shape=(32, 32, 3), **TINY)
    model.save(tmp_path / "model.keras")
    run = [sys.executable, os.path.join(ROOT, "recipes", "evaluate.py"),
           f"--model={tmp_path / 'model.keras'}", f"--dataset=folder:{root}",
           "--protocol=single", "--scales=36"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(run, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "eval.json").read_text())
    assert results["images"] == 299          # 300 held-out digits, one lying PNG left out
    proc = subprocess.run(run + ["--strict_data"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 1 and "lies.png" in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


# --- files from strangers -----------------------------------------------------------------

class _Evil:
    """Unpickling this would create a file: code run by loading."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_that_would_run_code_is_refused_not_run(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "it-ran"
    path = tmp_path / "vgg11.pth"
    torch.save({"features.0.weight": _Evil(str(marker))}, path)
    with pytest.raises(ValueError, match="Refused to load.*more than tensors"):
        keras_vgg.VGG(11, weights=str(path), **TINY)
    assert not marker.exists()


def test_a_keras_file_with_code_is_refused_unless_trusted(tmp_path):
    from keras_vgg.recipes import runs

    inputs = keras.Input((32, 32, 3))
    doubled = keras.layers.Lambda(lambda x: x * 2, name="doubled")(inputs)
    model = keras.Model(inputs, keras_vgg.VGG("A", include_top=False, **TINY)(doubled))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="Refused to load.*Lambda.*--trust_model_code"):
        runs.load_model(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="Refused to load"):
        export_vgg.export(str(tmp_path / "lambda.keras"), str(tmp_path / "out"), "x")
    assert runs.load_model(tmp_path / "lambda.keras", trust=True).name == model.name
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "recipes", "evaluate.py"),
                           f"--model={tmp_path / 'lambda.keras'}",
                           f"--dataset=folder:{tmp_path}"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 1 and "--trust_model_code" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("suffix", [".h5", ".weights.h5", ".keras", ".pth", ".safetensors"])
def test_truncated_and_misshapen_weight_files_give_clear_errors(tmp_path, suffix):
    from test_pretrained import write_legacy_h5

    model = keras_vgg.VGG11(classes=10, **TINY)
    path = tmp_path / f"vgg11{suffix}"
    if suffix == ".h5":
        write_legacy_h5(model, path)
    elif suffix in (".weights.h5", ".keras"):
        model.save_weights(path) if suffix == ".weights.h5" else model.save(path)
    else:
        torch = pytest.importorskip("torch")
        from safetensors.torch import save_file
        from test_torch_weights import TorchVGG
        state = {k: v.contiguous() for k, v in TorchVGG(11, False, "torchvision")
                 .state_dict().items()}
        save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    keras_vgg.VGG11(weights=str(path), classes=10, **TINY)     # whole, it loads
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"vgg11.*(truncated|corrupt|not a readable)"):
        keras_vgg.VGG11(weights=str(path), classes=10, **TINY)
    path.write_bytes(data)
    # Weights of other shapes (other widths) name the layer, not a deep Keras error.
    with pytest.raises(ValueError, match=r"(?i)(shape|block1_conv1|features\.0)"):
        keras_vgg.VGG11(weights=str(path), classes=10, widths=(8, 8, 8, 16, 16),
                        fc_units=32)
