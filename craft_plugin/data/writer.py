"""Writers for arcface_torch's data formats (used by the demo, the tests and ``rec pack``).

``write_rec`` writes the insightface layout: record 0 is a header ``IRHeader(flag=2,
label=(first_identity_record, end))``, records ``1..N`` are images (JPEG, scalar labels, ``id`` =
record index) sorted by label, then one identity record per class with label ``(first, end)``
image-record range; plus ``property`` (``num_classes,H,W``). With ``header=False`` it writes a
shuffled/im2rec-style file: image records only, keys from 0. ``write_bin`` writes a ``.bin`` pair
set as a protocol-2 pickle of ``(bins, issame_list)``.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Iterable, Optional, Tuple, Union

import numpy as np

from craft_plugin.data.recordio import IRHeader, encode_record, pack
from craft_plugin.data.transforms import decode_bgr, encode_jpeg


def as_payload(image: Union[np.ndarray, bytes, Path], quality: int) -> Tuple[bytes, tuple]:
    """(encoded bytes, HWC shape): arrays are JPEG-encoded; encoded bytes, or the bytes of an
    image file (a ``Path``), are kept as they are and decoded once, for their shape and to check
    that they decode (an error names the file)."""
    if isinstance(image, np.ndarray):
        return encode_jpeg(image, quality), image.shape
    if isinstance(image, Path):
        data = image.read_bytes()
        return data, decode_bgr(data, str(image)).shape
    return bytes(image), decode_bgr(bytes(image), "an image to pack").shape


def header_record(first_identity: int, end: int) -> bytes:
    """Record 0 of the insightface layout: ``IRHeader(flag=2, label=(first_identity, end))``."""
    return pack(IRHeader(2, np.array([first_identity, end], np.float32), 0, 1), b"")


class RecWriter:
    """Writes a dataset record by record as images come (``add``), so memory does not grow with
    their number: images must come in non-decreasing label order (the layout sorts by label). The
    header record, which needs the final counts, is written last over a placeholder of its size
    (its two float32 labels never hold the record magic, so its length is fixed). ``close`` adds the
    identity records and ``property`` and moves the files into place; until then nothing appears."""

    def __init__(self, out_dir, quality: int = 90, header: bool = True, name: str = "train"):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.quality, self.header = quality, header
        self.rec_path, self.idx_path = self.out_dir / f"{name}.rec", self.out_dir / f"{name}.idx"
        self.tmp_rec = self.rec_path.with_name(self.rec_path.name + ".tmp")
        self.tmp_idx = self.idx_path.with_name(self.idx_path.name + ".tmp")
        self.rec, self.idx = open(self.tmp_rec, "wb"), open(self.tmp_idx, "w")
        self.key = 1 if header else 0
        self.bounds: dict = {}
        self.shape: Optional[tuple] = None
        self.last_label: Optional[int] = None
        if header:
            self._write(0, header_record(0, 0))

    def _write(self, key: int, payload: bytes) -> None:
        self.idx.write(f"{key}\t{self.rec.tell()}\n")
        self.rec.write(encode_record(payload))

    def add(self, image: Union[np.ndarray, bytes, Path], label: int) -> None:
        label = int(label)
        if self.last_label is not None and label < self.last_label:
            raise ValueError(f"label {label} after label {self.last_label}: RecWriter takes images in "
                             f"non-decreasing label order (write_rec sorts them)")
        payload, shape = as_payload(image, self.quality)
        if self.shape is not None and shape[:2] != self.shape[:2]:
            raise ValueError(f"{image if isinstance(image, Path) else f'image {self.key}'} is {shape[0]}x{shape[1]}, "
                             f"the images before it {self.shape[0]}x{self.shape[1]}: all images must have one size")
        self.shape = self.shape or shape
        self.bounds.setdefault(label, [self.key, self.key])[1] = self.key + 1
        self._write(self.key, pack(IRHeader(0, float(label), self.key, 0), payload))
        self.key, self.last_label = self.key + 1, label

    def close(self) -> Path:
        if self.shape is None:
            raise ValueError("write_rec needs at least one image")
        if self.header:
            first_identity = self.key
            for label in sorted(self.bounds):
                self._write(self.key, pack(IRHeader(2, np.array(self.bounds[label], np.float32), self.key, 0), b""))
                self.key += 1
            head = encode_record(header_record(first_identity, self.key))
            assert len(head) == len(encode_record(header_record(0, 0)))
            self.rec.seek(0)
            self.rec.write(head)
        self.rec.close()
        self.idx.close()
        os.replace(self.tmp_rec, self.rec_path)
        os.replace(self.tmp_idx, self.idx_path)
        tmp = self.out_dir / "property.tmp"
        tmp.write_text(f"{max(self.bounds) + 1},{self.shape[0]},{self.shape[1]}\n")
        os.replace(tmp, self.out_dir / "property")
        return self.out_dir

    def abandon(self) -> None:
        """Close and remove the partial files (after an error)."""
        self.rec.close()
        self.idx.close()
        for tmp in (self.tmp_rec, self.tmp_idx):
            tmp.unlink(missing_ok=True)

    def __enter__(self) -> "RecWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is not None:
            self.abandon()


def write_rec(out_dir, images: Iterable[Tuple[Union[np.ndarray, bytes, Path], int]], quality: int = 90,
              header: bool = True, name: str = "train") -> Path:
    """Write ``<out_dir>/<name>.rec``, ``.idx`` and ``property``; returns ``out_dir``. Images are
    RGB uint8 HWC arrays (JPEG-encoded at ``quality``), already-encoded JPEG/PNG bytes or image
    files; they are sorted by label (stable) and streamed through :class:`RecWriter`, which
    ``rec pack`` uses directly (its images come in label order, so none is held)."""
    items = sorted(((img, int(label)) for img, label in images), key=lambda item: item[1])
    with RecWriter(out_dir, quality, header, name) as writer:
        for image, label in items:
            writer.add(image, label)
        return writer.close()


def write_bin(path, pairs: Iterable[Tuple[Union[np.ndarray, bytes], Union[np.ndarray, bytes], bool]],
              quality: int = 90) -> Path:
    """Write a verification ``.bin`` from ``(image_a, image_b, issame)`` pairs of RGB uint8 arrays
    (JPEG-encoded) or encoded image files (kept as they are), as insightface writes one: a protocol 2
    pickle of ``(list of encoded bytes, list of bools)``."""
    bins, issame = [], []
    for img_a, img_b, same in pairs:
        bins += [as_payload(img_a, quality)[0], as_payload(img_b, quality)[0]]
        issame.append(bool(same))
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        pickle.dump((bins, issame), handle, protocol=2)
    os.replace(tmp, path)
    return path
