"""``rec pack`` streams: each image is read, decoded once and written before the next is read,
memory does not grow with the number of images, and the output is the bytes mxnet's writer (and
an independent writer here) gives for the same image files."""
from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from craft_plugin.cli import main
from craft_plugin.data.recordio import RecordFile
from craft_plugin.data.writer import RecWriter

MAGIC = 0xCED7230A


def reference_dataset(files_by_label):
    """``(rec bytes, idx text)`` of the insightface layout, written here from the format's
    description: record = magic, length, payload, zero padding to 4 (no payload below holds the
    magic); payload = IRHeader ``<IfQQ`` (+ float32 labels when flag > 0) + image bytes."""
    def record(flag, label, key, id2, labels=b"", image=b""):
        payload = struct.pack("<IfQQ", flag, label, key, id2) + labels + image
        assert struct.pack("<I", MAGIC) not in payload
        return struct.pack("<II", MAGIC, len(payload)) + payload + b"\0" * (-len(payload) % 4)

    images = [(label, data) for label, datas in enumerate(files_by_label) for data in datas]
    first_identity, end = 1 + len(images), 1 + len(images) + len(files_by_label)
    records = [record(2, 0.0, 0, 1, struct.pack("<ff", first_identity, end))]
    records += [record(0, float(label), key, 0, image=data) for key, (label, data) in enumerate(images, 1)]
    start = 1
    for label, datas in enumerate(files_by_label):
        records.append(record(2, 0.0, first_identity + label, 0, struct.pack("<ff", start, start + len(datas))))
        start += len(datas)
    idx, offset = "", 0
    for key, rec in enumerate(records):
        idx += f"{key}\t{offset}\n"
        offset += len(rec)
    return b"".join(records), idx


def image_folders(root: Path, per_identity, size=12, seed=0):
    rng = np.random.default_rng(seed)
    files_by_label = []
    for identity, count in enumerate(per_identity):
        folder = root / f"person_{identity:03d}"
        folder.mkdir(parents=True)
        datas = []
        for j in range(count):
            ok, data = cv2.imencode(".png" if j % 2 else ".jpg", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
            (folder / f"{j:04d}{'.png' if j % 2 else '.jpg'}").write_bytes(data.tobytes())
            datas.append(data.tobytes())
        files_by_label.append(datas)
    return root, files_by_label


def test_pack_output_is_the_layout_written_independently(tmp_path):
    source, files_by_label = image_folders(tmp_path / "faces", [2, 3, 1, 4])
    assert main(["rec", "pack", str(source), str(tmp_path / "out")]) == 0
    rec, idx = reference_dataset(files_by_label)
    assert (tmp_path / "out" / "train.rec").read_bytes() == rec
    assert (tmp_path / "out" / "train.idx").read_text() == idx
    assert (tmp_path / "out" / "property").read_text() == "4,12,12\n"


def test_pack_output_is_byte_identical_to_mxnets_writer(mxnet_fixture_dir, tmp_path):
    """The mxnet-written fixture's JPEGs, one folder per label, packed: the same .rec and .idx."""
    records = RecordFile(mxnet_fixture_dir / "train.rec")
    for key in range(1, 7):
        header, body = records.read_unpacked(key)
        folder = tmp_path / "faces" / f"id{int(header.label)}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{key}.jpg").write_bytes(body)
    assert main(["rec", "pack", str(tmp_path / "faces"), str(tmp_path / "out")]) == 0
    for name in ("train.rec", "train.idx", "property"):
        assert (tmp_path / "out" / name).read_bytes() == (mxnet_fixture_dir / name).read_bytes(), name


def test_each_image_is_decoded_once_and_written_before_the_next_is_read(tmp_path, monkeypatch):
    source, files_by_label = image_folders(tmp_path / "faces", [3, 2, 3])
    writers, seen = [], []
    decode, init = cv2.imdecode, RecWriter.__init__

    def opened(self, *args, **kwargs):
        init(self, *args, **kwargs)
        writers.append(self)

    def counting(buf, flags):
        seen.append(writers[0].rec.tell() if writers else None)   # bytes written so far
        return decode(buf, flags)

    monkeypatch.setattr(RecWriter, "__init__", opened)
    monkeypatch.setattr(cv2, "imdecode", counting)
    assert main(["rec", "pack", str(source), str(tmp_path / "out")]) == 0
    assert len(seen) == 8                                     # once per image
    assert None not in seen and seen == sorted(set(seen))     # each record written before the next image is read


def peak_bytes(root: Path, out: Path) -> int:
    tracemalloc.start()
    try:
        assert main(["rec", "pack", str(root), str(out)]) == 0
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_number_of_images(tmp_path):
    peak_bytes(image_folders(tmp_path / "warm", [2, 2], size=8)[0], tmp_path / "o0")   # imports, caches
    small = peak_bytes(image_folders(tmp_path / "small", [10] * 10, size=8)[0], tmp_path / "o1")
    more_identities = peak_bytes(image_folders(tmp_path / "wide", [10] * 100, size=8)[0], tmp_path / "o2")
    larger_identities = peak_bytes(image_folders(tmp_path / "deep", [100] * 10, size=8)[0], tmp_path / "o3")
    # 900 more images: holding their payloads and names took 1.4-1.6 MB more; streamed, what grows is
    # one entry per identity (label ranges, folder list) or one identity's file names (about 60-70 kB)
    assert more_identities - small < 300_000 and larger_identities - small < 300_000, \
        (small, more_identities, larger_identities)


def test_labels_out_of_order_are_refused_by_the_streaming_writer(tmp_path):
    with RecWriter(tmp_path) as writer:
        writer.add(np.zeros((8, 8, 3), np.uint8), 1)
        with pytest.raises(ValueError, match="label 0 after label 1"):
            writer.add(np.zeros((8, 8, 3), np.uint8), 0)
