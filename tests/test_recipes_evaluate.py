"""recipes/evaluate.py: each testing protocol of the paper equals a
reference computed image by image, crop by crop, on a tiny model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vgg
from test_recipes_helpers import TINY, random_images, split_of

from keras_vgg.recipes import data as data_lib
from keras_vgg.recipes import evaluation as evaluate

MEAN = (120.0, 110.0, 100.0)
# Mixed sizes and aspect ratios; Q=40 makes (40, 48)-like shapes repeat, so
# dense evaluation batches some images together and leaves partial batches.
SIZES = [(40, 48), (48, 40), (40, 48), (36, 36), (50, 40), (40, 48), (60, 40)]


@pytest.fixture
def images(rng):
    return random_images(rng, SIZES)


@pytest.fixture
def labels():
    return np.array([3, 1, 4, 1, 5, 9, 2])


def tiny_model(seed):
    keras.utils.set_random_seed(seed)
    return keras_vgg.VGG("A", classes=10, input_shape=(32, 32, 3), **TINY)


def rescaled(image, q):
    """The image as the model sees it at scale Q (rescale + normalise)."""
    x = data_lib.rescale(tf.constant(image, tf.float32), q)
    return data_lib.normalize(x, MEAN).numpy()


def predict(model, x):
    return model(x[None], training=False).numpy()[0]


def ref_single(model, images, q):
    # The central crop at scale Q, taken as its window of the original image
    # (position and side rounded to whole pixels) resized to 32x32.
    out = []
    for image in images:
        h, w = image.shape[:2]
        side = round(32 * min(h, w) / q)
        top, left = (h - side) // 2, (w - side) // 2
        window = tf.constant(image[top:top + side, left:left + side], tf.float32)
        x = tf.image.resize(window, (32, 32), antialias=True)
        out.append(predict(model, data_lib.normalize(x, MEAN).numpy()))
    return np.array(out)


def ref_dense(model, images, q):
    fcn = keras_vgg.fully_convolutional(model)
    out = []
    for image in images:
        x = rescaled(image, q)
        out.append((predict(fcn, x) + predict(fcn, x[:, ::-1])) / 2)
    return np.array(out)


def ref_multicrop(model, images, q):
    out = []
    for image in images:
        x = rescaled(image, q)
        rows = np.round(np.linspace(0, x.shape[0] - 32, 5)).astype(int)
        cols = np.round(np.linspace(0, x.shape[1] - 32, 5)).astype(int)
        crops = []
        for r in rows:
            for c in cols:
                crop = x[r:r + 32, c:c + 32]
                crops += [crop, crop[:, ::-1]]
        assert len(crops) == 50
        # One call for the 50 crops; each crop's posterior is independent.
        out.append(model(np.stack(crops), training=False).numpy().mean(axis=0))
    return np.array(out)


def ref_errors(probs, labels):
    top1 = np.mean([np.argmax(p) != y for p, y in zip(probs, labels)])
    top5 = np.mean([y not in np.argsort(p)[-5:] for p, y in zip(probs, labels)])
    return top1, top5


@pytest.mark.parametrize("protocol,reference", [
    ("single", ref_single), ("dense", ref_dense), ("multicrop", ref_multicrop)])
def test_protocol_matches_the_reference(protocol, reference, images, labels):
    model = tiny_model(0)
    split = split_of(images, labels)
    got = evaluate._COMPONENTS[protocol](model, split, 40, MEAN, batch_size=4)
    np.testing.assert_allclose(got, reference(model, images, 40), atol=1e-5)


def test_dense_at_the_training_size_is_the_plain_model(rng):
    model = tiny_model(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = rescaled(image, 32)
    got = evaluate.dense(model, split_of([image], [0]), 32, MEAN)[0]
    np.testing.assert_allclose(
        got, (predict(model, x) + predict(model, x[:, ::-1])) / 2, atol=1e-5)


def test_multiscale_dense_plus_multicrop_fusion_of_two_models(images, labels):
    images, labels = images[:4], labels[:4]
    models = [tiny_model(0), tiny_model(1)]
    split = split_of(images, labels)
    scales = (36, 44)
    results = evaluate.evaluate_models(
        models, split, protocols=["dense+multicrop", "single"], scales=scales,
        mean_rgb=MEAN, batch_size=8)
    fused = np.mean([np.mean([(ref_dense(m, images, q)
                               + ref_multicrop(m, images, q)) / 2
                              for q in scales], axis=0) for m in models], axis=0)
    top1, top5 = ref_errors(fused, labels)
    assert results["dense+multicrop"]["top1_error"] == pytest.approx(top1)
    assert results["dense+multicrop"]["top5_error"] == pytest.approx(top5)
    single = np.mean([np.mean([ref_single(m, images, q) for q in scales], axis=0)
                      for m in models], axis=0)
    assert results["single"]["top1_error"] == pytest.approx(ref_errors(single, labels)[0])
    assert results["images"] == len(images) and results["scales"] == [36, 44]
    assert results["multicrop_over_dense_time"] > 0


def test_errors_are_top1_and_top5():
    probs = np.array([[.5, .2, .1, .08, .07, .05],     # label 0: right
                      [.5, .2, .1, .08, .07, .05],     # label 4: in the top 5
                      [.5, .2, .1, .08, .07, .05]])    # label 5: outside
    assert evaluate.errors(probs, np.array([0, 4, 5])) == \
        pytest.approx((2 / 3, 1 / 3))


def test_bad_protocols_and_scales_are_refused(images, labels):
    model, split = tiny_model(0), split_of(images, labels)
    with pytest.raises(evaluate.EvaluationError, match="Unknown protocol.*'tencrop'"):
        evaluate.evaluate_models([model], split, protocols=["tencrop"])
    with pytest.raises(evaluate.EvaluationError, match=r"\[24\] are smaller.*32"):
        evaluate.evaluate_models([model], split, protocols=["dense"],
                                 scales=(24, 40))


def test_progress_counts_every_image_of_every_pass(images, labels, capsys):
    """One bar over models x protocol components x scales, in images: it
    reaches its end only if every pass reports every image."""
    images, labels = images[:3], labels[:3]
    evaluate.evaluate_models([tiny_model(0)], split_of(images, labels),
                             protocols=["dense+multicrop", "single"], scales=(36, 40),
                             mean_rgb=MEAN, batch_size=8)
    assert "18/18" in capsys.readouterr().out      # 3 components x 2 scales x 3
    evaluate.evaluate_models([tiny_model(0)], split_of(images, labels),
                             protocols=["single"], scales=(36,), mean_rgb=MEAN,
                             verbose=0)
    assert capsys.readouterr().out == ""
