"""Shared by the eval tests (models, bin, ijb, compare): a tiny deterministic backbone and a
feature-map network that eval must refuse, behind one ``get_model``-like factory
(``--module eval_model_helpers:tiny --network tiny|featuremap``, a few milliseconds per batch on a
CPU core), a ``.bin`` written by the test, and a CLI runner."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import torch

from craft_plugin.cli import main

EMBEDDING_SIZE = 16
MODULE = ["--module", "eval_model_helpers:tiny", "--network", "tiny", "--embedding-size", str(EMBEDDING_SIZE)]


class Tiny(torch.nn.Module):
    """A 4x4 average pool of the image, then a linear map and a BatchNorm with non-default
    statistics (eval mode must use them): an embedding that depends on channel order and position."""

    def __init__(self, num_features: int):
        super().__init__()
        self.pool = torch.nn.AdaptiveAvgPool2d(4)
        self.fc = torch.nn.Linear(48, num_features)
        self.bn = torch.nn.BatchNorm1d(num_features)

    def forward(self, x):
        return self.bn(self.fc(torch.flatten(self.pool(x), 1)))


class FeatureMap(Tiny):
    """Tiny's weights, but the output is the pooled feature map (N, 3, 4, 4), not an embedding."""

    def __init__(self, num_features: int = EMBEDDING_SIZE):
        super().__init__(num_features)

    def forward(self, x):
        return self.pool(x)


def tiny(name, dropout=0.0, fp16=False, num_features=EMBEDDING_SIZE):
    """``tiny``: :class:`Tiny`; ``featuremap``: :class:`FeatureMap` (a model eval must refuse)."""
    assert name in ("tiny", "featuremap") and dropout == 0.0 and fp16 is False
    return (Tiny if name == "tiny" else FeatureMap)(num_features)


def trained_tiny(seed: int = 0, num_features: int = EMBEDDING_SIZE) -> Tiny:
    torch.manual_seed(seed)
    net = Tiny(num_features)
    net.bn.running_mean.uniform_(-0.5, 0.5)
    net.bn.running_var.uniform_(0.5, 2.0)
    return net.eval()


def save_trained_tiny(path: Path, seed: int = 0) -> Tiny:
    """:func:`trained_tiny` saved at ``path`` as a model.pt (its state_dict)."""
    net = trained_tiny(seed)
    torch.save(net.state_dict(), path)
    return net


def torch_embeddings(net: torch.nn.Module, rgb: np.ndarray) -> np.ndarray:
    """arcface_torch's ((x / 255) - 0.5) / 0.5 on RGB NCHW, the forward, as float64."""
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        return net(((x / 255) - 0.5) / 0.5).double().numpy()


def face_images(pairs: int, seed: int, blur: float = 40.0, noise: float = 30.0):
    """``(images (2 * pairs, 112, 112, 3) uint8 RGB, issame)``: 30 identity patterns; a genuine
    pair is one pattern under two noises (coarse, which the pooled embedding sees, and per pixel),
    an impostor pair two patterns; genuine and impostor pairs come in random order."""
    rng = np.random.default_rng(seed)
    ids = [cv2.resize(rng.integers(0, 256, (4, 4, 3)).astype(np.float32), (112, 112)) for _ in range(30)]
    images, issame = [], []
    for i in range(pairs):
        same = bool(rng.random() < 0.5)
        a = int(rng.integers(30))
        b = a if same else int((a + 1 + rng.integers(29)) % 30)
        for k in (a, b):
            coarse = cv2.resize(rng.normal(0, blur, (4, 4, 3)).astype(np.float32), (112, 112))
            images.append(np.clip(ids[k] + coarse + rng.normal(0, noise, (112, 112, 3)), 0, 255).astype(np.uint8))
        issame.append(same)
    return np.stack(images), issame


def write_bin(path: Path, images: np.ndarray, issame) -> Path:
    """A .bin as arcface_torch's are: a pickle of (encoded images, issame list). PNG is lossless."""
    bins = [cv2.imencode(".png", np.ascontiguousarray(img[:, :, ::-1]))[1].tobytes() for img in images]
    with open(path, "wb") as handle:
        pickle.dump((bins, list(issame)), handle, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def run_cli(argv, capsys):
    """``(exit code, stdout, stderr)`` of ``craft-plugin ARGV``."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(argv, capsys) -> dict:
    code, out, err = run_cli([*argv, "--json"], capsys)
    assert code == 0, err
    return json.loads(out)  # stdout is exactly one JSON document
