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
from typing import Iterable, List, Tuple, Union

import numpy as np

from craft_plugin.data.recordio import IRHeader, pack, write_records
from craft_plugin.data.transforms import decode_rgb, encode_jpeg


def as_payload(image: Union[np.ndarray, bytes], quality: int) -> Tuple[bytes, tuple]:
    """(encoded bytes, HWC shape): arrays are JPEG-encoded, encoded files kept as they are."""
    if isinstance(image, np.ndarray):
        return encode_jpeg(image, quality), image.shape
    return bytes(image), decode_rgb(bytes(image), "an image to pack").shape


def write_rec(out_dir, images: Iterable[Tuple[Union[np.ndarray, bytes], int]], quality: int = 90,
              header: bool = True, name: str = "train") -> Path:
    """Write ``<out_dir>/<name>.rec``, ``.idx`` and ``property``; returns ``out_dir``. Images are
    RGB uint8 HWC arrays (JPEG-encoded at ``quality``) or already-encoded JPEG/PNG bytes."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = sorted(((int(label), as_payload(img, quality)) for img, label in images), key=lambda item: item[0])
    if not items:
        raise ValueError("write_rec needs at least one image")
    shapes = {payload[1] for _, payload in items}
    if len(shapes) != 1:
        raise ValueError(f"all images must have one shape, got {sorted(shapes)}")
    height, width, _ = shapes.pop()
    first_key = 1 if header else 0
    records: List[Tuple[int, bytes]] = []
    bounds = {}
    for i, (label, (payload, _)) in enumerate(items):
        key = first_key + i
        bounds.setdefault(label, [key, key])[1] = key + 1
        records.append((key, pack(IRHeader(0, float(label), key, 0), payload)))
    if header:
        first_identity = first_key + len(items)
        identity_records = [(first_identity + j, pack(IRHeader(2, np.array(bounds[label], np.float32),
                                                               first_identity + j, 0), b""))
                            for j, label in enumerate(sorted(bounds))]
        end = first_identity + len(identity_records)
        head = (0, pack(IRHeader(2, np.array([first_identity, end], np.float32), 0, 1), b""))
        records = [head] + records + identity_records
    write_records(out_dir / f"{name}.rec", records)
    num_classes = max(bounds) + 1
    tmp = out_dir / "property.tmp"
    tmp.write_text(f"{num_classes},{height},{width}\n")
    os.replace(tmp, out_dir / "property")
    return out_dir


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
