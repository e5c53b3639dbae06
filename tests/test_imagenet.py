"""Tests for keras_vgg.imagenet: class index, preprocessing, decoding.

Input grids are looped over inside a test rather than parametrized: the
suite's autouse fixture calls keras.backend.clear_session() (~0.2 s) per test.
Every assertion message names the case that failed.
"""

import itertools

import ast
import hashlib
import importlib.resources
import json
import pathlib
import re

import keras
import numpy as np
import pytest
from keras import ops
from keras.applications import vgg16

from keras_vgg import imagenet
from keras_vgg.imagenet import (
    IMAGENET_MEAN_BGR,
    decode_predictions,
    imagenet_classes,
    preprocess_input,
)

KERAS_CLASS_INDEX_MD5 = "c2c37ea517e94d9795004a39431a14cb"


# --------------------------------------------------------------------------
# Class index
# --------------------------------------------------------------------------


def _bundled_bytes():
    return (
        importlib.resources.files("keras_vgg")
        .joinpath("data")
        .joinpath("imagenet_class_index.json")
        .read_bytes()
    )


def test_bundled_class_index_is_keras_file():
    # Byte-identical to the file keras.applications downloads (and checks
    # against this md5), so decode_predictions gives the same names.
    assert hashlib.md5(_bundled_bytes()).hexdigest() == KERAS_CLASS_INDEX_MD5
    raw = json.loads(_bundled_bytes())
    assert list(raw) == [str(i) for i in range(1000)]


def test_imagenet_classes_canonical_order():
    classes = imagenet_classes()
    assert len(classes) == 1000
    ids = [synset for synset, _ in classes]
    assert len(set(ids)) == 1000
    # ILSVRC-2012 class indices follow the sorted WordNet ids.
    assert ids == sorted(ids)
    assert all(s.startswith("n") and len(s) == 9 and s[1:].isdigit() for s in ids)
    assert all(isinstance(name, str) and name and " " not in name for _, name in classes)
    # Checked against timm's imagenet_synsets.txt / imagenet_synset_to_lemma.txt.
    expected = {
        0: ("n01440764", "tench"),
        1: ("n01443537", "goldfish"),
        2: ("n01484850", "great_white_shark"),
        134: ("n02012849", "crane"),
        207: ("n02099601", "golden_retriever"),
        281: ("n02123045", "tabby"),
        409: ("n02708093", "analog_clock"),
        517: ("n03126707", "crane"),
        638: ("n03710637", "maillot"),
        639: ("n03710721", "maillot"),
        850: ("n04399382", "teddy"),
        954: ("n07753592", "banana"),
        999: ("n15075141", "toilet_tissue"),
    }
    for index, pair in expected.items():
        assert classes[index] == pair, index
    # keras's file keeps these two names duplicated; no other name repeats.
    names = [name for _, name in classes]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    assert duplicated == ["crane", "maillot"]


def test_imagenet_classes_returns_a_fresh_list():
    first = imagenet_classes()
    first[0] = ("x", "y")
    first.clear()
    assert imagenet_classes()[0] == ("n01440764", "tench")


def test_module_does_not_import_tensorflow():
    tree = ast.parse(pathlib.Path(imagenet.__file__).read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    assert "tensorflow" not in modules
    assert "torch" not in modules and "jax" not in modules


# --------------------------------------------------------------------------
# preprocess_input
# --------------------------------------------------------------------------


def _image(dtype, ndim, data_format, seed=0):
    rng = np.random.default_rng(seed)
    spatial = (5, 7)
    shape = (*spatial, 3) if data_format == "channels_last" else (3, *spatial)
    if ndim == 4:
        shape = (2, *shape)
    if np.issubdtype(np.dtype(dtype), np.integer):
        return rng.integers(0, 256, size=shape).astype(dtype)
    return rng.uniform(0, 255, size=shape).astype(dtype)


DTYPES = ["uint8", "int32", "int64", "float16", "float32", "float64"]
FORMATS = ["channels_last", "channels_first"]


def test_preprocess_numpy_matches_keras():
    for dtype, ndim, data_format in itertools.product(DTYPES, (3, 4), FORMATS):
        case = f"{dtype} {ndim}-D {data_format}"
        x = _image(dtype, ndim, data_format)
        original = x.copy()
        # keras writes into float arrays, so it gets its own copy.
        expected = vgg16.preprocess_input(x.copy(), data_format=data_format)
        got = preprocess_input(x, data_format=data_format)
        assert isinstance(got, np.ndarray), case
        assert got.dtype == expected.dtype, case
        assert got.shape == x.shape, case
        np.testing.assert_array_equal(got, expected, err_msg=case)
        # The caller's array is untouched and not aliased by the output.
        np.testing.assert_array_equal(x, original, err_msg=case)
        assert x.dtype == original.dtype, case
        assert not np.shares_memory(got, x), case


def test_preprocess_output_dtypes():
    lo = _image("uint8", 4, "channels_last")
    assert preprocess_input(lo, "channels_last").dtype == keras.config.floatx()
    # Like keras, float inputs keep their precision (float64 stays float64).
    assert preprocess_input(lo.astype("float64"), "channels_last").dtype == np.float64
    assert preprocess_input(lo.astype("float16"), "channels_last").dtype == np.float16


def test_preprocess_values_by_hand():
    x = np.zeros((1, 1, 3), dtype="uint8")
    x[0, 0] = (10, 20, 30)  # R, G, B
    got = preprocess_input(x, data_format="channels_last")
    want = np.array([30, 20, 10], dtype="float32") - np.array(IMAGENET_MEAN_BGR, "float32")
    np.testing.assert_array_equal(got[0, 0], want)
    xf = np.moveaxis(x, -1, 0)  # (3, 1, 1)
    np.testing.assert_array_equal(preprocess_input(xf, "channels_first")[:, 0, 0], want)


def test_preprocess_does_not_modify_float_input():
    x = _image("float32", 4, "channels_last")
    original = x.copy()
    preprocess_input(x, data_format="channels_last")
    np.testing.assert_array_equal(x, original)
    # Non-contiguous views (e.g. a crop) are left alone too.
    view = x[:, 1:4, ::2, :]
    preprocess_input(view, data_format="channels_last")
    np.testing.assert_array_equal(x, original)


def test_preprocess_default_data_format():
    saved = keras.config.image_data_format()
    try:
        for data_format in FORMATS:
            keras.config.set_image_data_format(data_format)
            x = _image("float32", 4, data_format)
            expected = vgg16.preprocess_input(x.copy())
            np.testing.assert_array_equal(preprocess_input(x), expected, err_msg=data_format)
            np.testing.assert_array_equal(
                preprocess_input(x, data_format=None), expected, err_msg=data_format
            )
    finally:
        keras.config.set_image_data_format(saved)


def test_preprocess_float_tensor_matches_keras():
    for dtype, ndim, data_format in itertools.product(("float32", "float64"), (3, 4), FORMATS):
        case = f"{dtype} {ndim}-D {data_format}"
        x = _image(dtype, ndim, data_format, seed=1)
        # Separate tensors: keras's `x += mean` is in place for torch tensors.
        expected = vgg16.preprocess_input(ops.convert_to_tensor(x), data_format=data_format)
        tensor = ops.convert_to_tensor(x)
        got = preprocess_input(tensor, data_format=data_format)
        assert ops.is_tensor(got), case
        assert keras.backend.standardize_dtype(got.dtype) == dtype, case
        np.testing.assert_array_equal(
            ops.convert_to_numpy(got), ops.convert_to_numpy(expected), err_msg=case
        )
        # The input tensor keeps its values.
        np.testing.assert_array_equal(ops.convert_to_numpy(tensor), x, err_msg=case)


def test_preprocess_int_tensor_is_cast_to_float():
    # keras.applications keeps the integer dtype for tensors (the mean
    # subtraction then wraps around); we follow its NumPy behaviour instead.
    for dtype, data_format in itertools.product(("uint8", "int32"), FORMATS):
        case = f"{dtype} {data_format}"
        x = _image(dtype, 4, data_format, seed=2)
        got = preprocess_input(ops.convert_to_tensor(x), data_format=data_format)
        assert keras.backend.standardize_dtype(got.dtype) == keras.config.floatx(), case
        expected = vgg16.preprocess_input(x.copy(), data_format=data_format)
        np.testing.assert_array_equal(ops.convert_to_numpy(got), expected, err_msg=case)


def test_preprocess_symbolic_input_in_functional_model():
    inputs = keras.Input((None, None, 3), dtype="uint8")
    outputs = preprocess_input(inputs, data_format="channels_last")
    assert keras.backend.standardize_dtype(outputs.dtype) == keras.config.floatx()
    model = keras.Model(inputs, outputs)
    x = _image("uint8", 4, "channels_last", seed=3)
    got = ops.convert_to_numpy(model(x))
    np.testing.assert_array_equal(got, vgg16.preprocess_input(x.copy(), "channels_last"))


def test_preprocess_accepts_nested_lists():
    x = _image("uint8", 3, "channels_last")
    got = preprocess_input(x.tolist(), data_format="channels_last")
    np.testing.assert_array_equal(got, preprocess_input(x, data_format="channels_last"))


def test_preprocess_rejects_bad_data_format():
    x = _image("uint8", 4, "channels_last")
    for bad in ("NHWC", "channels-last", "", 1):
        pattern = rf"'channels_last', 'channels_first'.*Received: data_format={bad!r}$"
        with pytest.raises(ValueError, match=pattern):
            preprocess_input(x, data_format=bad)
        with pytest.raises(ValueError, match=pattern):
            preprocess_input(ops.convert_to_tensor(x), data_format=bad)


def test_preprocess_rejects_bad_shapes():
    cases = [
        ((2, 8, 8, 4), "channels_last", r"3 \(RGB\) channels on axis 3.*\(2, 8, 8, 4\)"),
        ((8, 8, 1), "channels_last", r"3 \(RGB\) channels on axis 2.*\(8, 8, 1\)"),
        # channels_last data read as channels_first: axis 1 has size 8.
        ((2, 8, 8, 3), "channels_first", r"channels on axis 1.*'channels_first'.*\(2, 8, 8, 3\)"),
        ((8, 8, 3), "channels_first", r"channels on axis 0.*\(8, 8, 3\)"),
        ((8, 3), "channels_last", r"3-D.*4-D.*\(8, 3\)"),
        ((1, 2, 8, 8, 3), "channels_last", r"3-D.*4-D.*\(1, 2, 8, 8, 3\)"),
    ]
    for shape, data_format, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            preprocess_input(np.zeros(shape, "uint8"), data_format=data_format)
        with pytest.raises(ValueError, match=pattern):
            preprocess_input(ops.zeros(shape), data_format=data_format)


# --------------------------------------------------------------------------
# decode_predictions
# --------------------------------------------------------------------------


def _hand_built_preds():
    preds = np.full((2, 1000), 1e-5, dtype="float32")
    preds[0, [281, 285, 282, 409, 0, 999]] = [0.5, 0.2, 0.15, 0.1, 0.03, 0.02]
    preds[1, [954, 2, 850]] = [0.9, 0.06, 0.04]
    return preds


def test_decode_predictions_hand_built_batch():
    preds = _hand_built_preds()
    results = decode_predictions(preds, top=3)
    assert [[(s, n) for s, n, _ in r] for r in results] == [
        [("n02123045", "tabby"), ("n02124075", "Egyptian_cat"), ("n02123159", "tiger_cat")],
        [("n07753592", "banana"), ("n01484850", "great_white_shark"), ("n04399382", "teddy")],
    ]
    assert [[float(p) for _, _, p in r] for r in results] == [
        [float(np.float32(v)) for v in (0.5, 0.2, 0.15)],
        [float(np.float32(v)) for v in (0.9, 0.06, 0.04)],
    ]
    # Scores are the values from preds, NumPy scalars as in keras.
    assert isinstance(results[0][0][2], np.float32)

    default = decode_predictions(preds)
    assert [len(r) for r in default] == [5, 5]
    assert [s for s, _, _ in default[0]] == [
        "n02123045", "n02124075", "n02123159", "n02708093", "n01440764",
    ]
    one = decode_predictions(preds, top=1)
    assert one == [
        [("n02123045", "tabby", preds[0, 281])],
        [("n07753592", "banana", preds[1, 954])],
    ]


def test_decode_predictions_full_ranking_is_sorted():
    rng = np.random.default_rng(4)
    preds = rng.random((3, 1000)).astype("float32")
    results = decode_predictions(preds, top=1000)
    classes = imagenet_classes()
    for pred, result in zip(preds, results):
        scores = [p for _, _, p in result]
        assert scores == sorted(scores, reverse=True)
        assert sorted(s for s, _, _ in result) == sorted(s for s, _ in classes)
        assert result[0][0] == classes[int(np.argmax(pred))][0]


def test_decode_predictions_ties_and_nan():
    preds = np.zeros((1, 1000), dtype="float64")
    preds[0, [10, 5, 700]] = 0.4
    preds[0, 3] = np.nan
    result = decode_predictions(preds, top=4)[0]
    classes = imagenet_classes()
    # Ties keep index order; NaN never outranks a real score.
    assert [s for s, _, _ in result[:3]] == [classes[i][0] for i in (5, 10, 700)]
    assert not any(np.isnan(p) for _, _, p in result)


def test_decode_predictions_integer_scores():
    preds = np.zeros((1, 1000), dtype="uint8")
    preds[0, 7], preds[0, 8] = 200, 3
    assert [s for s, _, _ in decode_predictions(preds, top=2)[0]] == [
        imagenet_classes()[7][0],
        imagenet_classes()[8][0],
    ]


def test_decode_predictions_tensor_and_list_inputs():
    preds = _hand_built_preds()
    expected = decode_predictions(preds, top=4)
    assert decode_predictions(ops.convert_to_tensor(preds), top=4) == expected
    assert decode_predictions(preds.tolist(), top=4)[0][0][:2] == expected[0][0][:2]
    assert decode_predictions(preds[:0]) == []


def test_decode_predictions_matches_keras(monkeypatch):
    # keras would download its class index; hand it ours (identical bytes,
    # see test_bundled_class_index_is_keras_file) to compare the logic.
    from keras.src.applications import imagenet_utils

    monkeypatch.setattr(imagenet_utils, "CLASS_INDEX", json.loads(_bundled_bytes()))
    preds = np.random.default_rng(5).random((4, 1000)).astype("float32")
    for top in (1, 5, 17):
        assert decode_predictions(preds, top=top) == imagenet_utils.decode_predictions(
            preds, top=top
        )


def test_decode_predictions_rejects_bad_shapes():
    for shape in [(1000,), (2, 999), (2, 1001), (1, 1000, 1), (1000, 2)]:
        pattern = rf"\(samples, 1000\).*Received: preds with shape {re.escape(str(shape))}$"
        with pytest.raises(ValueError, match=pattern):
            decode_predictions(np.zeros(shape))
        with pytest.raises(ValueError, match=pattern):
            decode_predictions(ops.zeros(shape))


def test_decode_predictions_rejects_bad_top():
    preds = _hand_built_preds()
    for top in [0, -1, 1001, 2.5, 5.0, "5", None, True]:
        pattern = rf"top must be an integer in \[1, 1000\]\. Received: top={re.escape(repr(top))}$"
        with pytest.raises(ValueError, match=pattern):
            decode_predictions(preds, top=top)


def test_decode_predictions_accepts_numpy_integer_top():
    assert len(decode_predictions(_hand_built_preds(), top=np.int64(7))[0]) == 7
    assert len(decode_predictions(_hand_built_preds(), top=1000)[1]) == 1000
