"""Loading arcface_torch's ``.bin`` verification sets (lfw, cfp_fp, agedb_30, ...) without mxnet.

A ``.bin`` is a pickle of ``(bins, issame_list)`` with ``len(bins) == 2 * len(issame_list)``; each
entry of ``bins`` is an encoded JPEG/PNG (``bytes``; a numpy ``uint8`` buffer in some user-made
files; numpy HWC RGB uint8 images in others). Old files are Python 2 pickles, read with
``encoding="bytes"``.

Unpickling is restricted: only builtin containers/scalars and the numpy reconstruction functions
(``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``,
``numpy.ndarray``, ``numpy.dtype``, ``numpy.core.multiarray.scalar``) are admitted; any other global
raises :class:`pickle.UnpicklingError` naming it and the file. A ``.bin`` from the internet cannot run code;
an empty or truncated one raises ``ValueError`` naming the file.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import List, Sequence, Tuple

import cv2
import numpy as np
import torch

from craft_plugin.data.transforms import decode_rgb

ALLOWED_GLOBALS = {
    ("builtins", "bytes"), ("builtins", "bytearray"), ("builtins", "list"), ("builtins", "tuple"),
    ("builtins", "bool"), ("__builtin__", "bool"), ("builtins", "set"), ("builtins", "frozenset"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle references a global outside ``ALLOWED_GLOBALS``."""


def latin1_encode(text, encoding: str = "latin1"):
    """``_codecs.encode`` as Python 3 pickles ``bytes`` for Python 2 (``latin1``, the only codec
    such a pickle names): a damaged codec name is refused here rather than looked up."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}): a .bin pickles bytes "
                                     f"as _codecs.encode(str, 'latin1') only")
    return text.encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise RefusedGlobal(f"a .bin may not reference {module}.{name}")
        if (module, name) == ("_codecs", "encode"):
            return latin1_encode
        return super().find_class(module, name)


def unpickle(raw: bytes, path: str, encoding: str) -> object:
    """The restricted unpickling of ``raw``; any failure is a ValueError naming the file and the
    byte offset where the pickle stopped (the numpy and pickle machinery raise many types), but a
    UnicodeDecodeError under the default encoding, which says: a Python 2 pickle, retry."""
    stream = io.BytesIO(raw)
    try:
        return RestrictedUnpickler(stream, encoding=encoding).load()
    except RefusedGlobal as exc:
        raise RefusedGlobal(f"{path}: refused: {exc}") from exc
    except UnicodeDecodeError:
        if encoding != "bytes":
            raise
        raise ValueError(f"{path}: truncated or not a .bin verification set ({len(raw)} bytes; the pickle stops "
                         f"at byte offset {stream.tell()}): a string that is not valid UTF-8") from None
    except Exception as exc:  # noqa: BLE001 - truncated, damaged or not a pickle at all
        raise ValueError(f"{path}: truncated or not a .bin verification set ({len(raw)} bytes; the pickle stops "
                         f"at byte offset {stream.tell()}): {type(exc).__name__}: {exc}") from exc


def pair_labels(issame: object, path: str) -> List[bool]:
    """The pair labels as bools. insightface's writers pickle a list of Python bools; a numpy
    bool (or an array of them) is the same value. Anything else (None, 0/1, 2, 'no') is refused:
    ``load_bin`` would otherwise take any truthy value for "same"."""
    if isinstance(issame, np.ndarray):
        if issame.dtype != np.bool_ or issame.ndim != 1:
            raise ValueError(f"{path}: pair labels are a {issame.dtype} array of shape {issame.shape}; expected "
                             f"booleans (True/False), as insightface writes them")
        return issame.tolist()
    if not isinstance(issame, (list, tuple)):
        raise ValueError(f"{path}: pair labels are a {type(issame).__name__}; expected a list of booleans")
    for index, value in enumerate(issame):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{path}: pair label {index} is {value!r} ({type(value).__name__}); expected a "
                             f"boolean (True/False), as insightface writes them")
    return [bool(value) for value in issame]


def read_bin_pairs(path: str) -> Tuple[list, List[bool]]:
    """``(bins, issame_list)`` from a ``.bin``, checked for shape and types."""
    raw = Path(path).read_bytes()
    if not raw:
        raise ValueError(f"{path}: empty file (0 bytes), not a .bin verification set")
    try:
        loaded = unpickle(raw, path, "ASCII")
    except UnicodeDecodeError:  # a Python 2 pickle: its str objects are the image bytes
        loaded = unpickle(raw, path, "bytes")
    if not (isinstance(loaded, tuple) and len(loaded) == 2):
        raise ValueError(f"{path}: not a .bin verification set: expected a pickled (bins, issame_list), "
                         f"found {type(loaded).__name__}")
    bins, issame = loaded
    if not isinstance(bins, (list, tuple)):
        raise ValueError(f"{path}: the images are a {type(bins).__name__}; expected a list of encoded images")
    issame = pair_labels(issame, path)
    if len(bins) != 2 * len(issame):
        raise ValueError(f"{path}: {len(bins)} images for {len(issame)} pairs (expected twice as many)")
    return list(bins), issame


def entry_rgb(entry, where: str) -> np.ndarray:
    """An entry of ``bins`` as RGB uint8 HWC: encoded bytes (or a uint8 buffer), or an HWC image."""
    if isinstance(entry, np.ndarray) and entry.ndim == 3:
        if entry.dtype != np.uint8 or entry.shape[2] != 3:
            raise ValueError(f"{where}: a {entry.dtype} array of shape {entry.shape}; expected encoded image bytes "
                             f"or an RGB uint8 (H, W, 3) array")
        return np.ascontiguousarray(entry)
    if not isinstance(entry, (bytes, bytearray)) and not (isinstance(entry, np.ndarray) and entry.dtype == np.uint8):
        raise ValueError(f"{where}: a {type(entry).__name__}; expected encoded image bytes")
    return decode_rgb(bytes(entry), where)


def fit_image(img: np.ndarray, image_size: Sequence[int], where: str) -> np.ndarray:
    """upstream ``load_bin``'s rule: an image whose width is not ``image_size[0]`` is resized so
    its short side is ``image_size[0]``; the result must then be ``image_size`` (a square image of
    another size is resized; anything else is refused naming it, where upstream fails copying it
    into the batch tensor). The size is checked before resizing. ``bin verify`` applies the same rule."""
    height, width = img.shape[:2]
    target = resized_shape(height, width, image_size[0]) if width != image_size[0] else (height, width)
    if target != (image_size[0], image_size[1]):
        raise ValueError(f"{where}: image is {height}x{width}"
                         + (f" ({target[0]}x{target[1]} resized as load_bin does)" if target != (height, width)
                            else "") + f", not {image_size[0]}x{image_size[1]}")
    return resize_short(img, image_size[0]) if target != (height, width) else img


def load_bin(path: str, image_size: Sequence[int] = (112, 112)) -> Tuple[List[torch.Tensor], List[bool]]:
    """What arcface_torch's ``eval.verification.load_bin`` returns: ``([data, flipped], issame)``.

    ``data`` is float32 (2N, 3, H, W) with values 0..255; ``flipped`` is its horizontal mirror.
    Images are fitted to ``image_size`` by :func:`fit_image` (upstream's resize rule).
    """
    bins, issame = read_bin_pairs(path)
    data = torch.empty((len(bins), 3, image_size[0], image_size[1]))
    for index, entry in enumerate(bins):
        where = f"{path}: image {index}"
        img = fit_image(entry_rgb(entry, where), image_size, where)
        data[index] = torch.from_numpy(img.transpose(2, 0, 1).copy())
    return [data, data.flip(3)], issame


def resized_shape(height: int, width: int, size: int) -> Tuple[int, int]:
    """The ``(height, width)`` of :func:`resize_short`'s result."""
    scale = size / min(height, width)
    return round(height * scale), round(width * scale)


def resize_short(img: np.ndarray, size: int) -> np.ndarray:
    """``mx.image.resize_short``: the short side to ``size``, the aspect ratio kept (bilinear)."""
    height, width = resized_shape(*img.shape[:2], size)
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
