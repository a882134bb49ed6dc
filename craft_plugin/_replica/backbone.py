"""Stand-in for arcface_torch's ``backbones``: a tiny iresnet-style network for CPU tests and the demo.

Its stem is iresnet's: ``conv1`` Conv2d(3, 64, 3x3, stride 1, padding 1, no bias) -> ``bn1``
BatchNorm2d(64, eps 1e-5) -> ``prelu`` PReLU(64); then cheap strided residual stages and
iresnet's head (BatchNorm2d, dropout, flatten, ``fc``, ``features`` BatchNorm1d), with a
global average pooling before ``fc`` so that any input size works (32x32 synthetic images,
112x112 from a .rec) and the model exports to ONNX.
"""
from __future__ import annotations

import torch
from torch import nn

from craft_plugin.errors import ConfigError


class BasicBlock(nn.Module):
    """iresnet's pre-activation block (BN, conv, BN, PReLU, conv, BN) with a strided shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + self.downsample(x)


class MiniIResNet(nn.Module):
    def __init__(self, num_features: int = 512, dropout: float = 0.0, fp16: bool = False,
                 widths: tuple = (16, 32, 48, 64)):
        super().__init__()
        self.fp16 = fp16
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        blocks, inplanes = [], 64
        for width in widths:
            blocks.append(BasicBlock(inplanes, width, 2))
            inplanes = width
        self.layers = nn.Sequential(*blocks)
        self.bn2 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(inplanes, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=self.fp16,
                            dtype=torch.float16 if x.device.type == "cuda" else torch.bfloat16):
            x = self.layers(self.prelu(self.bn1(self.conv1(x))))
            x = torch.flatten(self.dropout(self.pool(self.bn2(x))), 1)
        return self.features(self.fc(x.float()))


def get_model(name: str, **kwargs) -> nn.Module:
    """Like upstream ``backbones.get_model``; only ``"mini"`` exists here."""
    if name != "mini":
        raise ConfigError("network", name, '"mini" (the replica\'s only backbone)')
    return MiniIResNet(**kwargs)
