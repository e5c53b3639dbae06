"""torchvision's `vgg16`, layer for layer, for the PyTorch side of the benchmark.

torchvision is not importable beside every torch build, so this is the same
module tree (`features`, `avgpool`, `classifier`, same indices, same init) as
`torchvision.models.vgg16(weights=None)`: a state dict of one loads into the
other. `widths`/`fc_units` shrink it for the tiny test setting only.
"""

import torch
from torch import nn

from benchmarks.flops import KERNELS, WIDTHS


class VGG(nn.Module):
    def __init__(self, config="D", widths=WIDTHS, fc_units=4096,
                 num_classes=1000, dropout=0.5):
        super().__init__()
        layers, channels = [], 3
        for kernels, filters in zip(KERNELS[config], widths):
            for k in kernels:
                layers += [nn.Conv2d(channels, filters, kernel_size=k, padding=k // 2),
                           nn.ReLU(inplace=True)]
                channels = filters
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, fc_units), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(fc_units, fc_units), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(fc_units, num_classes))
        # torchvision's VGG initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def vgg16(**kwargs):
    return VGG("D", **kwargs)
