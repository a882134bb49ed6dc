"""Deterministic synthetic identities: a learnable stand-in for aligned face crops.

Identity k has a smooth random colour pattern (coarse 4x4 and finer 8x8 noise fields, upsampled);
sample j of identity k is that pattern shifted by a few pixels, with a random brightness/contrast
change and pixel noise. Every image is a pure function of ``(seed, k, j)``.
"""
from __future__ import annotations

import cv2
import numpy as np


def identity_pattern(seed: int, identity: int, size: int) -> np.ndarray:
    rng = np.random.default_rng([seed, identity])
    coarse = cv2.resize(rng.uniform(0, 1, (4, 4, 3)).astype(np.float32), (size, size),
                        interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(rng.uniform(0, 1, (8, 8, 3)).astype(np.float32), (size, size),
                      interpolation=cv2.INTER_CUBIC)
    return 0.65 * coarse + 0.35 * fine


def synthetic_image(seed: int, identity: int, sample: int, size: int = 32) -> np.ndarray:
    """Sample ``sample`` of ``identity`` as an RGB uint8 HWC image of ``size`` x ``size``."""
    rng = np.random.default_rng([seed, identity, sample, 1])
    pad = size // 8
    pattern = identity_pattern(seed, identity, size + 2 * pad)
    dy, dx = rng.integers(0, 2 * pad + 1, size=2)
    img = pattern[dy:dy + size, dx:dx + size]
    img = img * rng.uniform(0.75, 1.25) + rng.uniform(-0.15, 0.15)
    img = img + rng.normal(0, 0.08, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def parse_synthetic(root_dir: str) -> tuple:
    """``"synthetic:<ids>x<per_id>"`` -> (ids, per_id); plain ``"synthetic"`` is 32x8."""
    if root_dir == "synthetic":
        return 32, 8
    spec = root_dir.split(":", 1)[1]
    ids, per_id = spec.lower().split("x")
    return int(ids), int(per_id)
