"""The training transform of arcface_torch's ``MXFaceDataset``, without torchvision.

RGB uint8 HWC -> optional horizontal flip -> CHW float32 in [-1, 1], i.e. (x / 255 - 0.5) / 0.5,
which is what upstream's ToTensor + Normalize(0.5, 0.5) computes.
"""
from __future__ import annotations

import numpy as np
import torch


def random_flip() -> bool:
    """A fair coin from torch's RNG (as torchvision's RandomHorizontalFlip draws it)."""
    return bool(torch.rand(1) < 0.5)


def to_training_tensor(image: np.ndarray, flip: bool) -> torch.Tensor:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 HWC image, got {image.dtype} {image.shape}")
    if flip:
        image = image[:, ::-1]
    chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    return chw.float().div_(127.5).sub_(1.0)
