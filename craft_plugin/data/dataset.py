"""``RecFaceDataset``: arcface_torch's ``MXFaceDataset`` on our reader (no mxnet).

Same index set (with an insightface header record: keys ``1 .. first_identity_record - 1``;
without one: every key of the ``.idx``). Record 0 counts as a header when it has ``flag > 0`` and
no image bytes; upstream looks at ``flag`` alone, which would take an im2rec file whose first image
has an array label for a header. Same labels (the first value of an array label), decoded
to RGB like ``mx.image.imdecode``, upstream's random horizontal flip; items are RGB uint8 CHW
images (the training path decodes to BGR and reverses the channels while laying out the planes),
which the loader normalises to [-1, 1] per batch on the device (``dataloader.DeviceLoader``).
"""
from __future__ import annotations

import os
import re
from typing import Optional, Tuple

import numpy as np
from torch.utils.data import Dataset

from craft_plugin.data.recordio import IRHeader, RecordFile, index_problems
from craft_plugin.data.transforms import CoinFlips, decode_bgr, decode_rgb, label_tensor, to_chw
from craft_plugin.errors import RecordError


def insightface_header(records: RecordFile) -> Optional[IRHeader]:
    """The header record of an insightface ``.rec`` (key 0, wherever its ``.idx`` line stands;
    ``flag > 0``, no image bytes), or None."""
    if 0 not in records:
        return None
    header, body = records.read_unpacked(0)
    return header if header.flag > 0 and not len(body) else None


def header_range(records: RecordFile, header: IRHeader) -> Tuple[int, int]:
    """``(first identity record, end)`` of a header record, checked against the index before
    anything is sized by them: two whole numbers with ``1 <= first <= end <= records in the index``,
    every key ``0 .. end - 1`` present and no other. Errors name the header record's offset."""
    where = (records.rec_path, records.offset_of(0))
    values = np.asarray(header.label, dtype=np.float64).reshape(-1)
    if values.size != 2:
        raise RecordError(*where, f"header record (key 0) holds {values.size} label values; an insightface "
                                  f"header holds 2 (first identity record, end)")
    if not (np.isfinite(values).all() and (values == np.round(values)).all()):
        raise RecordError(*where, f"header record (key 0) label {values.tolist()} is not two whole record numbers")
    first_identity, end = int(values[0]), int(values[1])
    says = f"header record says images are keys 1..{first_identity - 1} and identities {first_identity}..{end - 1}"
    if not 1 <= first_identity <= end:
        raise RecordError(*where, f"{says}: not a valid range")
    if end > len(records):
        raise RecordError(*where, f"{says}, but the index lacks at least {end - len(records)} of them (it lists "
                                  f"{len(records)} records)")
    missing = np.setdiff1d(np.arange(1, end), records.keys)
    if len(missing):
        raise RecordError(*where, f"{says}, but the index lacks {len(missing)} of them (first: {missing[0]})")
    outside = records.keys[(records.keys < 0) | (records.keys >= end)]
    if len(outside):
        raise RecordError(*where, f"{says}, but the index also lists {len(outside)} keys outside 0..{end - 1} "
                                  f"(first: {outside[0]})")
    return first_identity, end


def image_keys(records: RecordFile) -> np.ndarray:
    """The image keys of a record file, checked against its index."""
    if not len(records.keys):
        raise RecordError(records.idx_path, 0, "the index lists no records")
    header = insightface_header(records)
    if header is None:
        return records.keys
    first_identity, _ = header_range(records, header)
    if first_identity == 1:
        raise RecordError(records.rec_path, records.offset_of(0), "header record lists no image records")
    return np.arange(1, first_identity)


def header_label(header: IRHeader) -> float:
    """The class of an image record: its label, or the first value of an array label."""
    return float(header.label if header.flag == 0 else header.label[0])


def sample_problem(shape: Tuple[int, ...], label: float, prop: Optional[Tuple[int, int, int]]) -> Optional[str]:
    """Why a decoded image record cannot be trained on, or None: a label that is not a finite
    integer >= 0 or not below ``property``'s class count (Partial FC would drop it), an image that
    is not ``property``'s size (batching would fail). Training and ``rec verify`` both ask this."""
    if not (np.isfinite(label) and label == int(label) and label >= 0):
        return f"label {label!r} is not a class number (a finite integer >= 0)"
    if prop is not None:
        classes, height, width = prop
        if tuple(shape[:2]) != (height, width):
            return f"image is {shape[0]}x{shape[1]}, property says {height}x{width}"
        if label >= classes:
            return f"label {int(label)} is not below property's class count {classes}"
    return None


def read_sample(records: RecordFile, key: int, rgb: bool = True,
                prop: Optional[Tuple[int, int, int]] = None) -> Tuple[np.ndarray, int]:
    """``(uint8 HWC image, class)`` of image record ``key`` (RGB, or BGR as OpenCV decodes),
    checked by :func:`sample_problem` against ``prop`` (``read_property``); errors name the file
    and offset."""
    header, payload = records.read_unpacked(key)
    where = f"{records.rec_path} record {key} at byte offset {records.offset_of(key)}"
    image = decode_rgb(payload, where) if rgb else decode_bgr(payload, where)
    label = header_label(header)
    problem = sample_problem(image.shape, label, prop)
    if problem:
        raise RecordError(records.rec_path, records.offset_of(key), f"record {key}: {problem}")
    return image, int(label)


PROPERTY_BYTES = 4096   # far more than "num_classes,height,width"; a larger file is not a property


def read_property(root_dir: str) -> Optional[Tuple[int, int, int]]:
    """``(num_classes, height, width)`` from the folder's insightface ``property`` file, or None
    when there is none; a malformed one (not ASCII, not three whole numbers >= 1 on its first
    line) raises RecordError naming it."""
    path = os.path.join(root_dir, "property")
    if not os.path.exists(path):
        return None
    with open(path, "rb") as handle:
        raw = handle.read(PROPERTY_BYTES + 1)
    expected = "expected one line 'num_classes,height,width' of whole numbers >= 1"
    if len(raw) > PROPERTY_BYTES:
        raise RecordError(path, 0, f"more than {PROPERTY_BYTES} bytes; {expected}")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise RecordError(path, exc.start, f"a byte that is not ASCII text (0x{raw[exc.start]:02x}); {expected}")
    lines = text.strip().splitlines()
    fields = lines[0].split(",") if lines else []
    if len(lines) != 1 or len(fields) != 3 or not all(re.fullmatch(r"\s*[0-9]{1,18}\s*", f) for f in fields):
        raise RecordError(path, 0, f"found {text.strip()[:80]!r}; {expected}")
    classes, height, width = (int(f) for f in fields)
    if min(classes, height, width) < 1:
        raise RecordError(path, 0, f"found {text.strip()!r}; {expected}")
    return classes, height, width


class RecFaceDataset(Dataset):
    def __init__(self, root_dir: str, local_rank: int = 0):
        self.root_dir = root_dir
        self.local_rank = local_rank
        self.records = RecordFile(os.path.join(root_dir, "train.rec"), os.path.join(root_dir, "train.idx"))
        problems = index_problems(self.records)
        if problems:  # refused here, before the first step, rather than at the record
            raise problems[0]
        self.imgidx = image_keys(self.records)
        self.flips = CoinFlips()
        self.property = read_property(root_dir)

    def __len__(self) -> int:
        return len(self.imgidx)

    def __getitem__(self, index: int):
        """``(RGB uint8 (3, H, W) image, mirrored on upstream's coin; int64 label)``."""
        image, label = read_sample(self.records, int(self.imgidx[index]), rgb=False, prop=self.property)
        return to_chw(image, self.flips(), bgr=True), label_tensor(label)
