"""Image decoding/encoding and the training transform of arcface_torch's ``MXFaceDataset``, split
in two: the per-image part in the Dataset (uint8) and the per-batch part on the device.

Decoding is OpenCV's (``IMREAD_COLOR``, BGR; RGB by reversing the channels), which is what
``mx.image.imdecode`` does inside mxnet. Upstream's transform is ``ToPILImage()``,
``RandomHorizontalFlip()``, ``ToTensor()``, ``Normalize(mean=0.5, std=0.5)``: per pixel
``(x / 255 - 0.5) / 0.5`` in float32, in that order. Here :func:`to_chw` mirrors and lays out the
uint8 image (RGB CHW) in the DataLoader worker, and :func:`normalise` maps a whole uint8 batch to
float32 wherever it lands, bit-identical to upstream's float32 operations.
"""
from __future__ import annotations

import functools
import struct
from typing import List, Optional, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import get_worker_info

# torchvision's ToTensor (x.float().div(255)) then Normalize(0.5, 0.5) (sub_(0.5).div_(0.5)), run on
# the CPU, where upstream runs them, once for every uint8 value
UNIT_RANGE = torch.arange(256).to(torch.float32).div(255).sub_(0.5).div_(0.5).numpy()


JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"


def check_jpeg_complete(buf: bytes, where: str) -> None:
    """A JPEG must end with its EOI marker (trailing zero padding allowed). libjpeg decodes a file
    whose tail is lost or zeroed with only a warning on stderr and grey or garbage rows; this makes
    it an error, counted once per record by ``rec verify`` and training alike."""
    if buf[:2] == JPEG_START and buf[-2:] != JPEG_END and not bytes(buf).rstrip(b"\0").endswith(JPEG_END):
        raise ValueError(f"{where}: JPEG of {len(buf)} bytes without its end marker (FFD9): truncated or "
                         f"overwritten; libjpeg would decode it with a warning into a damaged image")


# A damaged size field must not size an allocation: OpenCV allocates the whole image the header
# announces (up to 2**30 pixels, 3 GB) before it finds the data missing. No JPEG or PNG holds more
# than about 350 pixels per byte (a flat JPEG: one DC code per 8x8 block; deflate: 1032:1), so a
# header announcing more than this many per byte of the file is refused before decoding.
PIXELS_PER_BYTE = 1024
PNG_START = b"\x89PNG\r\n\x1a\n"
JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}   # start-of-frame markers (not DHT, JPG, DAC)


def announced_size(buf: bytes) -> Optional[Tuple[int, int]]:
    """``(height, width)`` from a JPEG's start-of-frame or a PNG's IHDR, without decoding; None
    when not found (OpenCV then says what it finds)."""
    if buf[:8] == PNG_START and len(buf) >= 24:
        width, height = struct.unpack_from(">II", buf, 16)
        return height, width
    if buf[:2] != JPEG_START:
        return None
    pos = 2
    while pos + 9 <= len(buf) and buf[pos] == 0xFF:
        marker = buf[pos + 1]
        if marker in JPEG_SOF:
            return struct.unpack_from(">HH", buf, pos + 5)
        pos += 1 if marker == 0xFF else 2 + struct.unpack_from(">H", buf, pos + 2)[0]
    return None


def decode_bgr(buf: bytes, where: str) -> np.ndarray:
    """Encoded JPEG/PNG bytes -> BGR uint8 HWC; ``where`` names the file/record in the error."""
    if not len(buf):  # OpenCV asserts (cv2.error) on an empty buffer
        raise ValueError(f"{where}: no image bytes (0 bytes)")
    check_jpeg_complete(buf, where)
    size = announced_size(buf)
    if size is not None and size[0] * size[1] > PIXELS_PER_BYTE * len(buf):
        raise ValueError(f"{where}: its header announces a {size[0]}x{size[1]} image, more pixels than "
                         f"{len(buf)} bytes can encode: a damaged size field")
    try:
        img = cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # a header announcing an image too large to allocate, and the like
        raise ValueError(f"{where}: {len(buf)} bytes that OpenCV refuses to decode "
                         f"({str(exc).strip().splitlines()[-1]})") from exc
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


def to_chw(image: np.ndarray, flip: bool, bgr: bool = False) -> torch.Tensor:
    """uint8 HWC (RGB, or BGR with ``bgr=True``) -> RGB uint8 CHW, mirrored left-right if ``flip``.

    Two byte moves at most, each one OpenCV call on a single-channel view: mirroring each row's
    bytes mirrors its pixels and reverses their channel order; a transpose of the
    ``(H*W, 3)`` pixel matrix gives the planes; flipping the ``(3, H*W)`` planes upside down
    reverses the channel order once more where the result would be BGR.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a 3-channel uint8 HWC image, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    pixels = cv2.flip(image.reshape(h, w * 3), 1) if flip else image
    planes = cv2.transpose(pixels.reshape(h * w, 3))
    if bgr != flip:
        planes = cv2.flip(planes, 0)
    return torch.from_numpy(planes.reshape(3, h, w))


@functools.lru_cache(maxsize=None)
def unit_range_on(device: torch.device) -> torch.Tensor:
    """:data:`UNIT_RANGE` as a tensor on ``device``, copied there once."""
    return torch.from_numpy(UNIT_RANGE).to(device)


def lookup(images: torch.Tensor) -> torch.Tensor:
    """``UNIT_RANGE[images]`` gathered on the images' device (one read of the table per pixel)."""
    table = unit_range_on(images.device)
    return table.index_select(0, images.reshape(-1).int()).view(images.shape)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (a batch, any device) -> float32 ``(x / 255 - 0.5) / 0.5``, bit for bit what
    torchvision's ``ToTensor()`` + ``Normalize(0.5, 0.5)`` give on the CPU.

    The values come from :data:`UNIT_RANGE`, never from re-running the arithmetic on the device:
    CUDA's ``div`` by a Python scalar multiplies by the reciprocal, and ``x * (1/255)`` differs from
    ``x / 255`` in float32 for 126 of the 256 byte values. On the CPU one ``cv2.LUT`` pass writes
    the output; elsewhere the table is gathered on the device.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"normalise takes uint8 images, got {images.dtype}")
    if images.device.type != "cpu":
        return lookup(images)
    return torch.from_numpy(cv2.LUT(images.contiguous().numpy().reshape(1, -1), UNIT_RANGE)).view(images.shape)


def to_training_tensor(image: np.ndarray, flip: bool, bgr: bool = False) -> torch.Tensor:
    """One image as upstream's transform gives it: RGB CHW float32 in [-1, 1], mirrored if ``flip``
    (for datasets that hand out float images; :class:`RecFaceDataset` hands out uint8)."""
    return normalise(to_chw(image, flip, bgr))
