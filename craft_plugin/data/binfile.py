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


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise RefusedGlobal(f"a .bin may not reference {module}.{name}")
        return super().find_class(module, name)


def read_bin_pairs(path: str) -> Tuple[list, List[bool]]:
    """``(bins, issame_list)`` from a ``.bin``, checked for shape."""
    raw = Path(path).read_bytes()
    if not raw:
        raise ValueError(f"{path}: empty file (0 bytes), not a .bin verification set")
    try:
        try:
            loaded = RestrictedUnpickler(io.BytesIO(raw)).load()
        except UnicodeDecodeError:
            loaded = RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except RefusedGlobal as exc:
        raise RefusedGlobal(f"{path}: refused: {exc}") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise ValueError(f"{path}: truncated or not a .bin verification set ({len(raw)} bytes): "
                         f"{type(exc).__name__}: {exc}") from exc
    if not (isinstance(loaded, tuple) and len(loaded) == 2):
        raise ValueError(f"{path}: not a .bin verification set: expected a pickled (bins, issame_list), "
                         f"found {type(loaded).__name__}")
    bins, issame = loaded
    if len(bins) != 2 * len(issame):
        raise ValueError(f"{path}: {len(bins)} images for {len(issame)} pairs (expected twice as many)")
    return list(bins), [bool(x) for x in issame]


def entry_rgb(entry, where: str) -> np.ndarray:
    """An entry of ``bins`` as RGB uint8 HWC: encoded bytes (or a uint8 buffer), or an HWC image."""
    if isinstance(entry, np.ndarray) and entry.ndim == 3:
        return np.ascontiguousarray(entry.astype(np.uint8))
    return decode_rgb(bytes(entry), where)


def load_bin(path: str, image_size: Sequence[int] = (112, 112)) -> Tuple[List[torch.Tensor], List[bool]]:
    """What arcface_torch's ``eval.verification.load_bin`` returns: ``([data, flipped], issame)``.

    ``data`` is float32 (2N, 3, H, W) with values 0..255; ``flipped`` is its horizontal mirror.
    Images whose width differs from ``image_size[0]`` are resized so the short side matches.
    """
    bins, issame = read_bin_pairs(path)
    data = torch.empty((len(bins), 3, image_size[0], image_size[1]))
    for index, entry in enumerate(bins):
        img = entry_rgb(entry, f"{path}: image {index}")
        if img.shape[1] != image_size[0]:
            img = resize_short(img, image_size[0])
        data[index] = torch.from_numpy(img.transpose(2, 0, 1).copy())
    return [data, data.flip(3)], issame


def resize_short(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    scale = size / min(h, w)
    return cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
