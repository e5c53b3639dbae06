"""Deployment formats (keras_vgg.export.deploy): LiteRT at four precisions and
ONNX Runtime int8, on tiny models of the LRN, BatchNorm and 1x1
configurations, calibrated on real images read as evaluation reads them."""

import os

import keras
import numpy as np
import pytest
from conftest import TINY

import keras_vgg
from keras_vgg.export import calibration, deploy, export_vgg, litert_export

pytest.importorskip("ai_edge_litert")
SIZE = 32


def spread(model, rng):
    model.set_weights([w + rng.normal(0, 0.3 / np.sqrt(max(1, w.size // w.shape[-1])),
                                      w.shape).astype("float32") for w in model.get_weights()])
    return model


@pytest.fixture(scope="module")
def images_folder(tmp_path_factory):
    """Real images: scikit-learn's digits as a folder (train/ and val/)."""
    from keras_vgg.recipes import sources
    return sources.write_digits(tmp_path_factory.mktemp("calibration") / "digits")


def tiny(tmp_path, config, batch_norm, rng):
    keras.utils.set_random_seed(0)
    model = spread(keras_vgg.VGG(config, batch_norm=batch_norm, classes=10,
                                 input_shape=(SIZE, SIZE, 3), **TINY), rng)
    path = tmp_path / f"{config}_{batch_norm}.keras"
    model.save(path)
    return model, str(path)


@pytest.mark.parametrize("config,batch_norm", [("A-LRN", False), ("B", True), ("C", False)])
def test_every_format_round_trips(tmp_path, images_folder, rng, config, batch_norm):
    model, path = tiny(tmp_path, config, batch_norm, rng)
    options = deploy.Options(calibration_data=f"folder:{images_folder}",
                             calibration_images=64)
    result = export_vgg.export(path, str(tmp_path / "out"), "m", test_scale=36,
                               formats="onnx,onnx_int8,litert", deploy_options=options)
    artifacts = result["artifacts"]
    assert set(artifacts) == {"model_int8.onnx", "model_fp32.tflite", "model_fp16.tflite",
                              "model_dynamic_int8.tflite", "model_int8.tflite"}
    for name, artifact in artifacts.items():
        assert os.path.getsize(os.path.join(result["path"], name)) == artifact["bytes"]
        assert artifact["check"]["images"] == deploy.CHECK_IMAGES
    fp32 = os.path.getsize(os.path.join(result["path"], "model_fp32.tflite"))
    weights = sum(w.numpy().nbytes for w in model.weights)   # float32
    assert fp32 > weights   # (and a fixed overhead, large beside tiny weights)
    assert fp32 - artifacts["model_fp16.tflite"]["bytes"] > 0.35 * weights
    assert fp32 - artifacts["model_int8.tflite"]["bytes"] > 0.5 * weights

    # Outside the export's own check: new images, through the interpreter.
    x = keras_vgg.preprocess_input(rng.uniform(0, 255, (6, SIZE, SIZE, 3)).astype("float32"))
    want = np.asarray(model(x))
    assert np.abs(want[0] - want[1]).max() > 1e-2   # outputs depend on the image
    for precision, atol in (("float32", 1e-5), ("float16", 1e-2)):
        with open(os.path.join(result["path"], litert_export.FILES[precision]), "rb") as f:
            got = litert_export.run(f.read(), x)
        np.testing.assert_allclose(got, want, atol=atol, err_msg=precision)


def test_dense_litert_takes_any_size_and_int8_io(tmp_path, images_folder, rng):
    model, path = tiny(tmp_path, "A", True, rng)
    options = deploy.Options(litert_precisions="float32,int8", litert_dense=True,
                             int8_io=True, calibration_data=f"folder:{images_folder}",
                             calibration_images=32)
    result = export_vgg.export(path, str(tmp_path / "out"), "m", formats="litert",
                               test_scale=36, deploy_options=options)
    dense = keras_vgg.fully_convolutional(model)
    x = rng.normal(0, 60, (2, 48, 80, 3)).astype("float32")   # larger than 32, not square
    with open(os.path.join(result["path"], "model_fp32.tflite"), "rb") as f:
        np.testing.assert_allclose(litert_export.run(f.read(), x), np.asarray(dense(x)),
                                   atol=1e-5)
    with open(os.path.join(result["path"], "model_int8.tflite"), "rb") as f:
        flatbuffer = f.read()
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_content=flatbuffer)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8


def test_calibration_images_are_evaluations_preprocessing(images_folder):
    from keras_vgg.recipes import data as data_lib
    from keras_vgg.recipes import sources

    mean = (10.0, 20.0, 30.0)
    got = calibration.calibration_images(f"folder:{images_folder}", image_size=SIZE,
                                         smallest_side=36, mean_rgb=mean, count=1498)
    split = sources.load_source(f"folder:{images_folder}").train
    want = np.concatenate([x.numpy() for x, _ in data_lib.eval_pipeline(
        split, batch_size=256, image_size=SIZE, smallest_side=36, mean_rgb=mean)])
    np.testing.assert_array_equal(got, want)
    few = calibration.calibration_images(f"folder:{images_folder}", image_size=SIZE,
                                         smallest_side=36, mean_rgb=mean, count=10)
    assert len(few) == 10 and not np.array_equal(few[1], want[1])   # spread over the split


def test_clear_errors(tmp_path, rng):
    _, path = tiny(tmp_path, "A", False, rng)
    with pytest.raises(calibration.CalibrationError, match="onnx_int8 and litert int8 need "
                                                           "calibration images.*--calibration_data"):
        export_vgg.export(path, str(tmp_path / "out"), "m", formats="onnx_int8,litert")
    assert not os.path.exists(tmp_path / "out")    # refused before anything was written
    with pytest.raises(ValueError, match="Unknown export format.*tflite.*litert"):
        export_vgg.export(path, str(tmp_path / "out"), "m", formats="tflite")
    with pytest.raises(ValueError, match="Unknown LiteRT precision.*int4.*float16"):
        deploy.Options(litert_precisions="int4")
    with pytest.raises(calibration.CalibrationError, match="does not exist"):
        export_vgg.export(path, str(tmp_path / "out"), "m", formats="onnx_int8",
                          deploy_options=deploy.Options(calibration_data="folder:/nowhere"))
    # Without int8, no calibration is needed.
    result = export_vgg.export(path, str(tmp_path / "out2"), "m", formats="litert",
                               deploy_options=deploy.Options(
                                   litert_precisions="float32,dynamic_int8"))
    assert set(result["artifacts"]) == {"model_fp32.tflite", "model_dynamic_int8.tflite"}


def test_a_wrong_model_fails_the_check(tmp_path, rng):
    """The per-precision check catches a model that is not the one exported."""
    model, _ = tiny(tmp_path, "A", False, rng)
    dense = keras_vgg.fully_convolutional(model)
    other = keras_vgg.fully_convolutional(spread(keras_vgg.VGG(
        "A", classes=10, input_shape=(SIZE, SIZE, 3), **TINY), np.random.default_rng(9)))
    flatbuffer = litert_export.convert(other, "float32", SIZE)
    x = rng.normal(0, 60, (4, SIZE, SIZE, 3)).astype("float32")
    with pytest.raises(AssertionError, match="LiteRT float32 differs from TensorFlow"):
        litert_export.check(flatbuffer, dense, x, "float32")
    assert litert_export.check(litert_export.convert(dense, "float32", SIZE), dense, x,
                               "float32")["top1_agreement"] == 1.0


@pytest.mark.parametrize("precision", ["int8", "dynamic_int8"])
def test_the_int8_check_catches_a_channel_swap(tmp_path, rng, precision):
    """int8's check (the average image's largest difference) passes
    quantization noise and fails the classic porting bug, BGR read as RGB."""
    model, _ = tiny(tmp_path, "B", True, rng)
    dense = keras_vgg.fully_convolutional(model)
    swapped = keras_vgg.fully_convolutional(model)
    kernel, bias = swapped.get_layer("block1_conv1").get_weights()
    swapped.get_layer("block1_conv1").set_weights([kernel[:, :, ::-1], bias])
    x = rng.normal(0, 60, (48, SIZE, SIZE, 3)).astype("float32")
    x[..., 0] += 40   # colour that a channel order changes
    good = litert_export.check(litert_export.convert(dense, precision, SIZE, calibration=x),
                               dense, x[:32], precision)
    assert good["relative_to"] == "mean over images" and good["top1_agreement"] >= 0.9
    with pytest.raises(AssertionError, match=f"LiteRT {precision} differs .* on average"):
        litert_export.check(litert_export.convert(swapped, precision, SIZE, calibration=x),
                            dense, x[:32], precision)
