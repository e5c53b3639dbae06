"""keras_vgg.explain: Grad-CAM as pytorch-grad-cam computes it, the sanity
checks of Adebayo et al. (2018), feature maps, filter patterns, every model
kind, and clear errors."""

import pathlib

import keras
import numpy as np
import pytest
from conftest import TINY
from test_backends import spread

import keras_vgg
from keras_vgg import explain

TOLERANCE = 1e-3   # max abs difference of heatmaps in [0, 1]


def spread_torch_vgg(torch, batch_norm):
    """A torchvision-layout VGG-11 with weights spread enough that its
    outputs, top classes included, depend on the image."""
    from test_torch_weights import TorchVGG

    torch.manual_seed(0)
    net = TorchVGG(11, batch_norm, "torchvision", he_init=False).eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return net


def varied_images(rng, n, size=224):
    """Images of different brightness and contrast (model input scale)."""
    return np.stack([rng.uniform(-120, 120) + rng.normal(
        scale=rng.uniform(10, 60), size=(size, size, 3)) for _ in range(n)]
    ).astype("float32")


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "bn"])
def anchor(request, tmp_path_factory):
    """pytorch-grad-cam's GradCAM on a PyTorch VGG, and the same weights in
    keras_vgg: (keras model, images, {class choice: (classes, cam before the
    resize, cam after pytorch-grad-cam's cv2 resize)}, torch top classes)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("cv2")
    pytest.importorskip("ttach")
    from safetensors.torch import save_file

    import pytorch_grad_cam_reference
    GradCAM, ClassifierOutputTarget, scale_cam_image = pytorch_grad_cam_reference.load()

    net = spread_torch_vgg(torch, request.param)
    path = tmp_path_factory.mktemp("anchor") / "vgg11.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    # The default softmax head: Grad-CAM must still differentiate the logit.
    model = keras_vgg.VGG(11, batch_norm=request.param, classes=10,
                          weights=str(path), **TINY)
    x = varied_images(np.random.default_rng(0), 4)
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    layer = net.features[-2]   # the last ReLU, before the last pooling
    with torch.no_grad():
        top = net(tx).numpy().argmax(-1)
    refs = {}
    with GradCAM(net, [layer]) as cam:
        for choice, classes in (("top", None), ("other", (top + 3) % 10)):
            targets = None if classes is None else \
                [ClassifierOutputTarget(int(c)) for c in classes]
            resized = cam(tx, targets=targets)
            # BaseCAM.compute_cam_per_layer, without its cv2 resize.
            activations = cam.activations_and_grads.activations[0].numpy()
            gradients = cam.activations_and_grads.gradients[0].numpy()
            targets = targets or [ClassifierOutputTarget(int(c)) for c in top]
            raw = cam.get_cam_image(tx, layer, targets, activations, gradients)
            refs[choice] = (classes, scale_cam_image(np.maximum(raw, 0)), resized)
    return model, x, refs, top


def test_grad_cam_matches_pytorch_grad_cam(anchor):
    model, x, refs, top = anchor
    ours = explain.grad_cam(model, x, resize=False)
    _, want, _ = refs["top"]
    assert ours.shape == want.shape == (4, 14, 14) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, want, atol=TOLERANCE, rtol=0)
    assert (model.predict(x, verbose=0).argmax(-1) == top).all()
    classes, want_other, _ = refs["other"]
    other = explain.grad_cam(model, x, class_index=classes, resize=False)
    np.testing.assert_allclose(other, want_other, atol=TOLERANCE, rtol=0)
    # The check can fail: the heatmaps depend on the image and on the class
    # by far more than the tolerance.
    assert want.std(axis=(1, 2)).min() > 0.1
    assert np.abs(explain.grad_cam(model, x[1:2], resize=False)[0] - want[0]).max() \
        > 100 * TOLERANCE
    assert np.abs(other - want).max(axis=(1, 2)).min() > 100 * TOLERANCE


def test_resized_heatmaps_and_dense_model_agree(anchor):
    model, x, refs, top = anchor
    _, _, resized = refs["top"]
    ours = explain.grad_cam(model, x)
    assert ours.shape == (4, 224, 224)
    # Both resize bilinearly with half-pixel centres; cv2 interpolates with
    # fixed-point weights, which moves values by up to ~0.02.
    assert np.abs(ours - resized).max() < 0.05
    # The fully convolutional model's score map is 1x1 at 224: its average
    # is the original's logit, so the heatmaps are the same.
    dense = keras_vgg.fully_convolutional(model)
    np.testing.assert_allclose(explain.grad_cam(dense, x), ours, atol=1e-5)
    if len(set(top)) > 1:   # the plain net's top classes differ image to image
        classes = explain.grad_cam(dense, x, class_index=top)
        np.testing.assert_allclose(classes, ours, atol=1e-5)
    assert explain.grad_cam(dense, np.concatenate([x, x[:, :, :64]], 2)).shape \
        == (4, 224, 288)


def test_top_classes_of_the_anchor_differ():
    torch = pytest.importorskip("torch")
    net = spread_torch_vgg(torch, False)
    x = varied_images(np.random.default_rng(0), 4)
    with torch.no_grad():
        top = net(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
    assert len(set(top.numpy().argmax(-1))) > 1   # else "top class agrees" is empty


@pytest.mark.parametrize("config,batch_norm,layer", [
    ("A", False, "block5_conv2"), ("A-LRN", False, "block5_conv2"),
    ("B", True, "block5_relu2"), ("C", False, "block5_conv3"),
    ("D", True, "block5_relu3"), ("E", False, "block5_conv4")])
def test_every_configuration(rng, config, batch_norm, layer):
    model = keras_vgg.VGG(config, batch_norm=batch_norm, classes=10,
                          input_shape=(32, 32, 3), **TINY)
    x = rng.normal(scale=30, size=(3, 32, 32, 3)).astype("float32")
    assert explain.default_layer(model) == layer
    heatmaps = explain.grad_cam(model, x, batch_size=2)
    assert heatmaps.shape == (3, 32, 32) and heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    np.testing.assert_allclose(heatmaps, explain.grad_cam(model, x, layer=layer),
                               atol=1e-6)


def test_head_of_ones_own_is_class_activation_mapping(rng):
    """On a backbone + GlobalAveragePooling + Dense, Grad-CAM at the pooled
    layer is CAM (Zhou et al. 2016): the class's Dense weights times the
    maps, whatever way the head is attached."""
    base = keras_vgg.VGG("A", include_top=False, input_shape=(64, 64, 3), **TINY)
    pool = keras.layers.GlobalAveragePooling2D()
    dense = keras.layers.Dense(3, activation="softmax")
    functional = keras.Model(base.input, dense(pool(base.output)))
    inputs = keras.Input((64, 64, 3))
    nested = keras.Model(inputs, dense(pool(base(inputs))))
    sequential = keras.Sequential([keras.Input((64, 64, 3)), base, pool, dense])
    x = rng.normal(scale=30, size=(2, 64, 64, 3)).astype("float32")
    maps = keras.ops.convert_to_numpy(base(x))
    kernel = keras.ops.convert_to_numpy(dense.kernel)
    for c in range(3):
        cam = np.maximum(maps @ kernel[:, c], 0)
        cam -= cam.min(axis=(1, 2), keepdims=True)
        cam /= cam.max(axis=(1, 2), keepdims=True) + 1e-7
        for model in (functional, nested, sequential):
            got = explain.grad_cam(model, x, class_index=c, layer="block5_pool",
                                   resize=False)
            np.testing.assert_allclose(got, cam, atol=1e-5, err_msg=model.name)


# --------------------------------------------------------------------------
# Sanity checks (Adebayo et al., "Sanity Checks for Saliency Maps", 2018)

TRAIN_SIZE, TEST_SIZE, PATCH = 64, 128, 16


def striped_images(rng, n, size, labels, quadrants):
    """Noise with a patch of vertical (label 0) or horizontal (1) stripes in
    the given quadrant (0 top left, 1 top right, 2 bottom left, 3 bottom
    right); label 2 is noise alone."""
    x = rng.normal(0, 30, (n, size, size, 3)).astype("float32")
    stripes = np.where((np.arange(PATCH) // 2) % 2 == 0, 80.0, -80.0)
    half = size // 2
    for image, label, quadrant in zip(x, labels, quadrants):
        if label == 2:
            continue
        patch = np.tile(stripes[None, :], (PATCH, 1)) if label == 0 else \
            np.tile(stripes[:, None], (1, PATCH))
        top = (quadrant // 2) * half + rng.integers(0, half - PATCH + 1)
        left = (quadrant % 2) * half + rng.integers(0, half - PATCH + 1)
        image[top:top + PATCH, left:left + PATCH] += patch[..., None]
    return x


@pytest.fixture(scope="module")
def trained():
    """A small VGG + GlobalAveragePooling head trained (about 10 s) to tell
    vertical from horizontal stripes from noise alone, wherever the stripes
    are, and test images with the stripes in a known quadrant.

    Trained on 64-pixel images and explained on 128-pixel ones (the network
    is fully convolutional): at 64 pixels block 5's map is 4x4 and its cells
    all see the whole image; at 128 it is 8x8. The noise class gives each
    pattern class evidence of its own: with two classes only, one of them is
    learnt as "not the other", whose evidence is everywhere the other's is
    not.
    """
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 512)
    x = striped_images(rng, 512, TRAIN_SIZE, labels, rng.integers(0, 4, 512))
    base = keras_vgg.VGG("A", include_top=False, input_shape=(None, None, 3),
                         widths=(8, 16, 32, 32, 32))
    head = keras.layers.Dense(3, activation="softmax", name="classifier")
    model = keras.Model(base.input, head(
        keras.layers.GlobalAveragePooling2D()(base.output)))
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    model.fit(x, labels, epochs=4, batch_size=32, verbose=0)
    test_rng = np.random.default_rng(1)
    test_labels = np.arange(32) % 2
    quadrants = (np.arange(32) // 2) % 4
    seen = striped_images(test_rng, 32, TRAIN_SIZE, test_labels, quadrants)
    accuracy = (model.predict(seen, verbose=0).argmax(-1) == test_labels).mean()
    assert accuracy > 0.9, accuracy
    x_test = striped_images(test_rng, 32, TEST_SIZE, test_labels, quadrants)
    return model, x_test, test_labels, quadrants


def quadrant_mass(heatmaps, quadrants):
    half = heatmaps.shape[1] // 2
    return np.array([h[(q // 2) * half:(q // 2 + 1) * half,
                       (q % 2) * half:(q % 2 + 1) * half].sum() / (h.sum() + 1e-12)
                     for h, q in zip(heatmaps, quadrants)])


def test_heatmap_mass_lies_where_the_class_evidence_is(trained):
    model, x, labels, quadrants = trained
    mass = quadrant_mass(explain.grad_cam(model, x, class_index=labels), quadrants)
    # A heatmap blind to where the stripes are puts a quarter of its mass in
    # each quadrant.
    assert mass.mean() > 0.6, mass.round(2)
    assert np.mean(mass > 0.5) >= 0.75, mass.round(2)


def rank_correlation(a, b):
    """Spearman's rank correlation of two heatmaps (no ties in practice)."""
    ranks = [np.argsort(np.argsort(m.ravel())) for m in (a, b)]
    return np.corrcoef(*ranks)[0, 1]


def test_heatmaps_change_when_the_top_layers_are_reinitialised(trained):
    """Cascading randomisation from the top (Adebayo et al. 2018, section 3.1).

    Threshold 0.5: a map that does not depend on these weights keeps a rank
    correlation of 1 with the trained model's (the activations' channel sum,
    computed below, does for the classifier step); two unrelated maps have a
    correlation around 0, whose mean over 32 images varies by about 0.1 at
    most. 0.5 is far from both.
    """
    model, x, labels, _ = trained
    before = explain.grad_cam(model, x, class_index=labels)
    saved = model.get_weights()
    features = keras.Model(model.input, model.get_layer("block5_conv2").output)
    blind_before = keras.ops.convert_to_numpy(features(x)).sum(-1)
    rng = np.random.default_rng(7)
    try:
        for name in ("classifier", "block5_conv2", "block5_conv1"):
            layer = model.get_layer(name)
            kernel, bias = layer.get_weights()
            layer.set_weights([rng.normal(0, np.std(kernel), kernel.shape)
                               .astype("float32"), bias])
            after = explain.grad_cam(model, x, class_index=labels)
            rho = np.mean([rank_correlation(a, b) for a, b in zip(before, after)])
            assert abs(rho) < 0.5, (name, rho)
            if name == "classifier":   # the activations are unchanged
                blind = keras.ops.convert_to_numpy(features(x)).sum(-1)
                assert np.mean([rank_correlation(a, b) for a, b in
                                zip(blind_before, blind)]) > 0.999
    finally:
        model.set_weights(saved)


# --------------------------------------------------------------------------
# Feature maps and filter patterns


@pytest.mark.parametrize("batch_norm", [False, True])
def test_feature_maps_are_the_layer_outputs(rng, batch_norm):
    model = keras_vgg.VGG("A", batch_norm=batch_norm, classes=10,
                          input_shape=(32, 32, 3), **TINY)
    x = rng.normal(scale=30, size=(3, 32, 32, 3)).astype("float32")
    maps = explain.feature_maps(model, x, batch_size=2)
    act = "relu" if batch_norm else "conv"
    assert list(maps) == [f"block1_{act}1", f"block2_{act}1", f"block3_{act}2",
                          f"block4_{act}2", f"block5_{act}2"]
    assert list(maps) == explain.block_layers(model)
    for name in list(maps) + ["fc1"]:
        by_hand = keras.Model(model.input, model.get_layer(name).output)(x)
        got = maps[name] if name in maps else explain.feature_maps(model, x, name)[name]
        np.testing.assert_allclose(got, keras.ops.convert_to_numpy(by_hand),
                                   rtol=1e-5, atol=1e-5, err_msg=name)
    # Conv layers alone take images of any size, as feature_extractor does.
    big = rng.normal(scale=30, size=(1, 48, 80, 3)).astype("float32")
    assert explain.feature_maps(model, big, ["block2_pool"])["block2_pool"].shape \
        == (1, 12, 20, 8)


def test_filter_patterns_increase_the_filters_activation(rng):
    model = spread(keras_vgg.VGG("A", classes=10, input_shape=(32, 32, 3), **TINY), rng)
    for layer in ("block1_conv1", "block4_conv2"):
        found = explain.filter_patterns(model, layer, [0, 1, 2], size=48, steps=8)
        assert found.images.shape == (3, 48, 48, 3)
        assert 0 <= found.images.min() and found.images.max() <= 1
        assert found.activations.shape == (9, 3)
        start, end = found.activations[0], found.activations[-1]
        assert (end > start + 1.0).all() and (end > 2 * np.abs(start)).all(), \
            (layer, start, end)
        # The last activations are those of the inputs it returns.
        maps = keras.ops.convert_to_numpy(
            keras_vgg.feature_extractor(model, [layer])(found.inputs))
        np.testing.assert_allclose(maps[np.arange(3), ..., [0, 1, 2]].mean((1, 2)),
                                   end, rtol=1e-4)


# --------------------------------------------------------------------------
# Errors


@pytest.fixture(scope="module")
def small():
    keras.utils.set_random_seed(0)
    return keras_vgg.VGG("A", classes=10, input_shape=(32, 32, 3), **TINY)


@pytest.mark.parametrize("call,message", [
    (lambda m, x: explain.grad_cam(m, x, layer="block9_conv1"),
     r"No layer 'block9_conv1'.*Allowed \(conv layers\): \['block1_conv1', "
     r"'block2_conv1', 'block3_conv1'"),
    (lambda m, x: explain.grad_cam(m, x, layer="fc1"),
     r"'fc1'.*outputs shape \(None, 32\), not a spatial map"),
    (lambda m, x: explain.grad_cam(m, x, class_index=10),
     r"class_index=10 for 2 image\(s\).*integer in \[0, 10\)"),
    (lambda m, x: explain.grad_cam(m, x, class_index=[1, 2, 3]),
     r"class_index=\[1, 2, 3\] for 2 image"),
    (lambda m, x: explain.grad_cam(m, x, class_index=-1), r"class_index=-1"),
    (lambda m, x: explain.grad_cam(m, x[0]),
     r"\(N, H, W, C\); received an array of shape \(32, 32, 3\).*images\[None\]"),
    (lambda m, x: explain.grad_cam(m, x[..., :1]),
     r"takes 3 channels on axis 3.*shape \(2, 32, 32, 1\)"),
    (lambda m, x: explain.grad_cam(m, np.zeros((2, 40, 32, 3))),
     r"shape \(32, 32, 3\); received shape \(40, 32, 3\).*fully_convolutional"),
    (lambda m, x: explain.feature_maps(m, x, ["nope"]), r"No layer 'nope'"),
    (lambda m, x: explain.filter_patterns(m, "block1_conv1", [3, 4]),
     r"Filter index\(es\) \[4\] out of range.*4 filters"),
    (lambda m, x: explain.filter_patterns(m, "flatten", 0), r"not a spatial map"),
])
def test_bad_input_is_a_clear_error(small, call, message):
    x = np.zeros((2, 32, 32, 3), "float32")
    with pytest.raises(ValueError, match=message):
        call(small, x)


def test_a_model_without_classifier_is_refused():
    base = keras_vgg.VGG("A", include_top=False, input_shape=(32, 32, 3), **TINY)
    with pytest.raises(ValueError, match=r"explains class scores.*outputs shape "
                                         r"\(None, 1, 1, 16\)"):
        explain.grad_cam(base, np.zeros((1, 32, 32, 3)))


# --------------------------------------------------------------------------
# Backends: each in a subprocess, since Keras picks its backend once

BACKEND_SCRIPT = r"""
import json, sys
import numpy as np
import pathlib

import keras
import keras_vgg
from keras_vgg import explain
args = json.loads(sys.argv[1])
assert keras.backend.backend() == args["backend"], keras.backend.backend()
d = args["dir"]
x = np.load(f"{d}/x.npy")
model = keras_vgg.VGG("A", batch_norm=True, classes=10, input_shape=(32, 32, 3),
                      weights=f"{d}/model.weights.h5", **args["tiny"])
out = run(model, x)
# channels_first, which these backends run on any CPU (TensorFlow not: see
# conftest.backend_runs_channels_first): the same heatmaps.
keras.config.set_image_data_format("channels_first")
model = keras_vgg.VGG("A", batch_norm=True, classes=10, input_shape=(3, 32, 32),
                      weights=f"{d}/model.weights.h5", **args["tiny"])
out["channels_first"] = explain.grad_cam(model, x.transpose(0, 3, 1, 2))
np.savez(f"{d}/{args['backend']}.npz", **out)
"""


def explain_everything(model, x):
    """What the backend test compares: each function, on every path."""
    found = explain.filter_patterns(model, "block3_conv2", [0, 5], size=32, steps=3)
    return dict(
        top=explain.grad_cam(model, x), other=explain.grad_cam(model, x, 3, "block4_relu2"),
        small=explain.grad_cam(model, x, resize=False),
        dense=explain.grad_cam(keras_vgg.fully_convolutional(model), x),
        features=explain.feature_maps(model, x)["block3_relu2"],
        patterns=found.images, gains=found.activations)


# Building a model on JAX takes about 30 s of op compilation on 2 cores.
@pytest.mark.parametrize("backend", [pytest.param("jax", marks=pytest.mark.slow),
                                     "torch"])
def test_backend_matches_tensorflow(tmp_path, rng, backend):
    import inspect
    import json
    import os
    import subprocess
    import sys

    pytest.importorskip(backend)

    model = spread(keras_vgg.VGG("A", batch_norm=True, classes=10,
                                 input_shape=(32, 32, 3), **TINY), rng)
    model.save_weights(tmp_path / "model.weights.h5")
    x = varied_images(rng, 3, 32)
    np.save(tmp_path / "x.npy", x)
    want = explain_everything(model, x)
    script = "\n".join(["from keras_vgg import explain",
                        inspect.getsource(explain_everything).replace(
                            "def explain_everything", "def run"), BACKEND_SCRIPT])
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(dict(
            backend=backend, dir=str(tmp_path), tiny=TINY))],
        env=env, capture_output=True, text=True, timeout=600,
        cwd=str(pathlib.Path(__file__).resolve().parent.parent))
    assert result.returncode == 0, result.stderr[-3000:]
    got = np.load(tmp_path / f"{backend}.npz")
    want["channels_first"] = want["top"]
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-3, atol=1e-3,
                                   err_msg=f"{backend}: {name}")
    assert np.abs(want["top"] - want["other"]).max() > 0.1


def test_channels_first_gives_the_channels_last_heatmaps(rng, channels_first):
    cf = keras_vgg.VGG("A", batch_norm=True, classes=10, input_shape=(3, 32, 32), **TINY)
    keras.config.set_image_data_format("channels_last")
    cl = keras_vgg.VGG("A", batch_norm=True, classes=10, input_shape=(32, 32, 3), **TINY)
    # Flatten orders features (h, w, c) in both formats: the weights carry over.
    cl.set_weights(spread(cf, rng).get_weights())
    x = varied_images(rng, 2, 32)
    np.testing.assert_allclose(explain.grad_cam(cf, x.transpose(0, 3, 1, 2)),
                               explain.grad_cam(cl, x), atol=1e-4)
    assert explain.feature_maps(cf, x.transpose(0, 3, 1, 2))["block2_relu1"].shape \
        == (2, 8, 16, 16)
