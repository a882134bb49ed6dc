"""Shared by the ``eval ijb`` tests: a tiny get_model-like factory (``--module eval_ijb_helpers:get_model``,
a few milliseconds per batch on a CPU core) and a trained-looking model.pt for it."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

EMBEDDING_SIZE = 16
MODULE_ARGS = ["--module", "eval_ijb_helpers:get_model", "--network", "tiny", "--embedding-size", str(EMBEDDING_SIZE)]


class TinyNet(nn.Module):
    """Strided convolutions, BatchNorm and a linear embedding head, as an mbf in miniature."""

    def __init__(self, num_features: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=4, padding=2, bias=False), nn.BatchNorm2d(8), nn.PReLU(8),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.PReLU(16),
            nn.AdaptiveAvgPool2d(7), nn.Flatten())   # 14x14 -> 7x7 (ONNX-exportable)
        self.fc = nn.Linear(16 * 49, num_features)
        self.bn = nn.BatchNorm1d(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.fc(self.features(x)))


class FeatureMap(nn.Module):
    """Not an embedding model: its output is a (N, C, H, W) feature map."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def get_model(name: str, dropout: float = 0.0, fp16: bool = False, num_features: int = 512, **kwargs) -> nn.Module:
    """``tiny``: :class:`TinyNet`; ``featuremap``: :class:`FeatureMap` (a model eval must refuse)."""
    if name == "featuremap":
        return FeatureMap()
    if name != "tiny":
        raise ValueError(f"'tiny' or 'featuremap' here, got {name!r}")
    return TinyNet(num_features)


def save_tiny_model(path: Path, seed: int = 0) -> TinyNet:
    """A TinyNet with non-default BatchNorm statistics (eval mode must use them), saved at ``path``."""
    torch.manual_seed(seed)
    net = TinyNet(EMBEDDING_SIZE)
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    torch.save(net.state_dict(), path)
    return net.eval()
