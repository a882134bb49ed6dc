"""Image decoding/encoding and the training transform of arcface_torch's ``MXFaceDataset``.

Decoding is OpenCV's (``IMREAD_COLOR``, BGR converted to RGB), which is what ``mx.image.imdecode``
does inside mxnet. The transform, without torchvision: RGB uint8 HWC -> optional horizontal flip ->
CHW float32 in [-1, 1], i.e. (x / 255 - 0.5) / 0.5, as upstream's ToTensor + Normalize(0.5, 0.5).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch


def decode_rgb(buf: bytes, where: str) -> np.ndarray:
    """Encoded JPEG/PNG bytes -> RGB uint8 HWC; ``where`` names the file/record in the error."""
    img = cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{where}: {len(buf)} bytes that are not a decodable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """RGB uint8 HWC -> JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"OpenCV could not encode an image of shape {rgb.shape}")
    return buf.tobytes()


def random_flip() -> bool:
    """A fair coin from torch's RNG (as torchvision's RandomHorizontalFlip draws it)."""
    return torch.rand(1).item() < 0.5


def to_training_tensor(image: np.ndarray, flip: bool) -> torch.Tensor:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 HWC image, got {image.dtype} {image.shape}")
    chw = (image[:, ::-1] if flip else image).transpose(2, 0, 1)
    out = np.empty(chw.shape, dtype=np.float32)
    np.multiply(chw, np.float32(1 / 127.5), out=out, casting="unsafe")
    out -= np.float32(1.0)
    return torch.from_numpy(out)
