"""Image decoding/encoding and the training transform of arcface_torch's ``MXFaceDataset``.

Decoding is OpenCV's (``IMREAD_COLOR``, BGR; RGB by reversing the channels), which is what
``mx.image.imdecode`` does inside mxnet. The transform, without torchvision: uint8 HWC -> optional
horizontal flip -> CHW float32 in [-1, 1], bit-identical to upstream's ``ToTensor()`` followed by
``Normalize(mean=0.5, std=0.5)``, i.e. ``(x / 255 - 0.5) / 0.5`` in float32.
"""
from __future__ import annotations

from typing import List

import cv2
import numpy as np
import torch
from torch.utils.data import get_worker_info

# (x / 255 - 0.5) / 0.5 for every uint8 x, in float32 and in that order (torchvision's rounding)
UNIT_RANGE = (((np.arange(256, dtype=np.float32) / np.float32(255)) - np.float32(0.5)) / np.float32(0.5))


def decode_bgr(buf: bytes, where: str) -> np.ndarray:
    """Encoded JPEG/PNG bytes -> BGR uint8 HWC; ``where`` names the file/record in the error."""
    img = cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{where}: {len(buf)} bytes that are not a decodable image")
    return img


def decode_rgb(buf: bytes, where: str) -> np.ndarray:
    """Encoded JPEG/PNG bytes -> RGB uint8 HWC, the pixels ``mx.image.imdecode`` returns."""
    return cv2.cvtColor(decode_bgr(buf, where), cv2.COLOR_BGR2RGB)


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """RGB uint8 HWC -> JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"OpenCV could not encode an image of shape {rgb.shape}")
    return buf.tobytes()


def label_tensor(label: int) -> torch.Tensor:
    """``torch.tensor(label, dtype=torch.long)``, what upstream's datasets return, for a third of the cost."""
    return torch.from_numpy(np.array(label, dtype=np.int64))


class CoinFlips:
    """Fair coins from torch's RNG: coin ``k`` is ``u_k < 0.5`` for the ``k``-th uniform draw,
    i.e. torchvision's ``RandomHorizontalFlip`` (one ``torch.rand(1)`` per image).

    In a DataLoader worker the dataset is the only user of the worker's (seeded) generator, so the
    coins are drawn ``block`` at a time: ``torch.rand(n)`` yields the same numbers as ``n`` calls
    of ``torch.rand(1)``, which keeps the flips exactly upstream's for one torch call per block.
    In the main process (``num_workers=0``) other code shares the generator, so each coin is its
    own draw, in upstream's order.
    """

    def __init__(self, block: int = 256):
        self.block = block
        self._coins: List[bool] = []

    def __call__(self) -> bool:
        if get_worker_info() is None:
            return torch.rand(1).item() < 0.5
        if not self._coins:
            self._coins = (torch.rand(self.block) < 0.5).tolist()[::-1]
        return self._coins.pop()


def to_training_tensor(image: np.ndarray, flip: bool, bgr: bool = False) -> torch.Tensor:
    """uint8 HWC (RGB, or BGR with ``bgr=True``) -> RGB CHW float32 in [-1, 1], mirrored if ``flip``.

    One pass per channel: OpenCV splits the channels (reversing BGR costs nothing) and a table
    lookup writes each plane's float32 values straight into the output.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a 3-channel uint8 HWC image, got {image.dtype} {image.shape}")
    planes = cv2.split(cv2.flip(image, 1) if flip else image)
    out = np.empty((3,) + image.shape[:2], dtype=np.float32)
    for plane, dst in zip(planes[::-1] if bgr else planes, out):
        written = cv2.LUT(plane, UNIT_RANGE, dst=dst)
        if written is not dst:  # an OpenCV that allocated its own output instead of filling dst
            dst[...] = written
    return torch.from_numpy(out)
