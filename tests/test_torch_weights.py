"""torchvision / timm state dicts -> keras_vgg, checked against a PyTorch forward.

The reference networks are built here with torchvision's and timm's module
layouts (so their state-dict keys are those libraries'), at narrow widths.
"""

import keras
import numpy as np
import pytest
from conftest import TINY

import keras_vgg

torch = pytest.importorskip("torch")
nn = torch.nn

CFGS = {11: "A", 13: "B", 16: "D", 19: "E"}


class TorchVGG(nn.Module):
    def __init__(self, depth, batch_norm, layout, widths=TINY["widths"],
                 fc=TINY["fc_units"], classes=10, he_init=True):
        super().__init__()
        layers, c = [], 3
        for kernels, w in zip(keras_vgg.CONFIGS[CFGS[depth]].kernels, widths):
            for _ in kernels:
                layers += [nn.Conv2d(c, w, 3, padding=1)]
                layers += [nn.BatchNorm2d(w)] if batch_norm else []
                layers += [nn.ReLU()]
                c = w
            layers += [nn.MaxPool2d(2, 2)]
        self.features = nn.Sequential(*layers)
        self.layout = layout
        if layout == "torchvision":
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(c * 49, fc), nn.ReLU(), nn.Dropout(),
                nn.Linear(fc, fc), nn.ReLU(), nn.Dropout(), nn.Linear(fc, classes))
        else:  # timm: ConvMlp pre_logits + ClassifierHead
            self.pre_logits = nn.Module()
            self.pre_logits.fc1 = nn.Conv2d(c, fc, 7)
            self.pre_logits.fc2 = nn.Conv2d(fc, fc, 1)
            self.head = nn.Module()
            self.head.fc = nn.Linear(fc, classes)
        with torch.no_grad():
            # He-normal weights and spread biases (PyTorch's default init at
            # these widths gives logits that hardly depend on the image), and
            # non-trivial BN statistics and affine terms.
            g = torch.Generator().manual_seed(depth)
            for m in self.modules():
                if he_init and isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.normal_(0, (2 / m.weight[0].numel()) ** 0.5, generator=g)
                    m.bias.normal_(0, 0.1, generator=g)
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.2, generator=g)
                    m.running_var.uniform_(0.5, 2.0, generator=g)
                    m.weight.normal_(1, 0.2, generator=g)
                    m.bias.normal_(0, 0.2, generator=g)

    def forward(self, x):
        x = self.features(x)
        if self.layout == "torchvision":
            return self.classifier(torch.flatten(self.avgpool(x), 1))
        x = torch.relu(self.pre_logits.fc2(torch.relu(self.pre_logits.fc1(x))))
        return self.head.fc(x.mean((2, 3)))


def reference(depth, batch_norm, layout):
    torch.manual_seed(depth)
    net = TorchVGG(depth, batch_norm, layout).eval()
    x = np.random.default_rng(depth).normal(size=(2, 224, 224, 3)).astype("float32")
    with torch.no_grad():
        logits = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    return net, x, logits


def _save(net, tmp_path, layout, state=None):
    state = net.state_dict() if state is None else state
    if layout == "torchvision":
        path = tmp_path / "vgg.pth"
        torch.save(state, path)
    else:
        from safetensors.torch import save_file
        path = tmp_path / "vgg.safetensors"
        save_file(state, str(path))
    return path


def _tolerance(logits):
    """1e-5 of the logits' spread; the test images' logits must differ from
    each other by far more, or a comparison proves nothing."""
    tolerance = 1e-5 * float(logits.max() - logits.min())
    assert np.abs(logits[0] - logits[1]).max() > 1000 * tolerance
    return tolerance


@pytest.mark.parametrize("layout", ["torchvision", "timm"])
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("depth", [11, 13, 16, 19])
def test_parity_with_pytorch(tmp_path, depth, batch_norm, layout):
    net, x, logits = reference(depth, batch_norm, layout)
    path = _save(net, tmp_path, layout)
    model = keras_vgg.VGG(depth, batch_norm=batch_norm, classes=10,
                          classifier_activation=None, weights=str(path), **TINY)
    atol = _tolerance(logits)
    np.testing.assert_allclose(model.predict(x, verbose=0), logits, rtol=1e-4, atol=atol)
    # The same weights through the fully-convolutional head at 224 agree too.
    dense = keras_vgg.fully_convolutional(model)
    np.testing.assert_allclose(dense.predict(x, verbose=0), logits, rtol=1e-4, atol=atol)


@pytest.mark.parametrize("layout", ["torchvision", "timm"])
def test_parity_catches_a_porting_bug(tmp_path, layout):
    """The parity check fails for the classic porting bug: the first conv's
    input channels reversed (RGB <-> BGR)."""
    net, x, logits = reference(11, False, layout)
    state = dict(net.state_dict())
    state["features.0.weight"] = state["features.0.weight"].flip(1).contiguous()
    path = _save(net, tmp_path, layout, state)
    model = keras_vgg.VGG(11, classes=10, classifier_activation=None, weights=str(path), **TINY)
    assert np.abs(model.predict(x, verbose=0) - logits).max() > 100 * _tolerance(logits)


def test_headless_model_and_checkpoint_dict(tmp_path):
    net, x, _ = reference(16, True, "torchvision")
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in
                                           net.state_dict().items()}}, path)
    model = keras_vgg.VGG(16, batch_norm=True, include_top=False, weights=str(path),
                          widths=TINY["widths"])
    with torch.no_grad():
        ref = net.features(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(model(x), ref.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)


def test_channels_first(tmp_path, channels_first):
    net, x, logits = reference(11, False, "torchvision")
    model = keras_vgg.VGG(11, classes=10, classifier_activation=None,
                          input_shape=(3, 224, 224), **TINY)
    keras_vgg.load_torch_weights(model, net.state_dict())
    np.testing.assert_allclose(model(x.transpose(0, 3, 1, 2)), logits, rtol=1e-4, atol=1e-4)


def test_mismatches_are_clear_errors(tmp_path):
    net, _, _ = reference(13, False, "torchvision")
    state = net.state_dict()
    with pytest.raises(ValueError, match=r"10 conv layers, model 'vgg16' has 13"):
        keras_vgg.load_torch_weights(keras_vgg.VGG(16, classes=10, **TINY), state)
    with pytest.raises(ValueError, match=r"without BatchNorm.*batch_norm=False"):
        keras_vgg.load_torch_weights(keras_vgg.VGG(13, batch_norm=True, classes=10, **TINY), state)
    with pytest.raises(ValueError, match=r"predictions.*\(32, 1000\).*\(32, 10\)"):
        keras_vgg.load_torch_weights(keras_vgg.VGG(13, **TINY), state)
    with pytest.raises(ValueError, match=r"224x224 input"):
        keras_vgg.load_torch_weights(
            keras_vgg.VGG(13, classes=10, input_shape=(64, 64, 3), **TINY), state)
    with pytest.raises(ValueError, match=r"No VGG conv weights"):
        keras_vgg.load_torch_weights(keras_vgg.VGG(13, **TINY), {"fc.weight": np.zeros((2, 2))})
