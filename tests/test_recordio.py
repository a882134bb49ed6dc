"""The record reader and writer: exact against files and readings of the real mxnet 1.9.1."""
from __future__ import annotations

import json
import pickle
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from craft_plugin.data.dataset import RecFaceDataset, read_sample
from craft_plugin.data.recordio import (MAGIC_BYTES, IRHeader, RecordFile, encode_record, pack, unpack,
                                        write_records)
from craft_plugin.data.transforms import decode_rgb, encode_jpeg
from craft_plugin.data.writer import write_rec
from craft_plugin.errors import RecordError
from craft_plugin._replica.synthetic import synthetic_image

HERE = Path(__file__).resolve().parent


def test_fixture_reads_as_tools_write_mxnet_fixture_documents(mxnet_fixture_dir):
    records = RecordFile(mxnet_fixture_dir / "train.rec")
    assert records.keys.tolist() == list(range(10))
    # the header record is 8 + 24 + 8 bytes; the next starts after record 1's 4-aligned payload
    assert records.offsets[:3].tolist() == [0, 40, 40 + 8 + -(-len(records.read(1)) // 4) * 4]
    header, body = unpack(records.read(0))
    assert (header.flag, header.label.tolist(), header.id, header.id2, body) == (2, [7.0, 10.0], 0, 1, b"")
    labels = [read_sample(records, key)[1] for key in range(1, 7)]
    assert labels == [0, 0, 1, 1, 1, 2]
    for key in range(1, 7):
        assert unpack(records.read(key))[0].id == key
        assert read_sample(records, key)[0].shape == (112, 112, 3)
    ranges = [unpack(records.read(key))[0].label.tolist() for key in (7, 8, 9)]
    assert ranges == [[1, 3], [3, 6], [6, 7]]
    dataset = RecFaceDataset(str(mxnet_fixture_dir))
    assert dataset.imgidx.tolist() == [1, 2, 3, 4, 5, 6]
    image, label = dataset[5]
    assert image.shape == (3, 112, 112) and label.item() == 2
    assert image.dtype == torch.uint8  # the loader normalises whole batches


def test_fixture_reads_as_mxnet_reads_it(legacy_python, mxnet_fixture_dir, tmp_path):
    records = RecordFile(mxnet_fixture_dir / "train.rec")
    images = range(1, 7)
    spec = {"write": [], "read": str(mxnet_fixture_dir / "train.rec"),
            "decode": [records.read_unpacked(key)[1].hex() for key in images]}
    result = run_mxnet(legacy_python, tmp_path, spec)
    assert [key for key, *_ in result["read"]] == records.keys.tolist()
    for key, raw, flag, label, id1, id2, body in result["read"]:
        assert records.read(key) == bytes.fromhex(raw)
        header, our_body = unpack(records.read(key))
        assert (header.flag, np.asarray(header.label).tolist(), header.id, header.id2) == (flag, label, id1, id2)
        assert our_body == bytes.fromhex(body)
    for i, key in enumerate(images):
        assert np.array_equal(read_sample(records, key)[0], np.load(tmp_path / f"decoded_{i}.npy"))


def test_rewriting_the_fixture_payloads_is_byte_identical(mxnet_fixture_dir, tmp_path):
    records = RecordFile(mxnet_fixture_dir / "train.rec")
    write_records(tmp_path / "train.rec", [(key, records.read(key)) for key in records.keys.tolist()])
    assert (tmp_path / "train.rec").read_bytes() == (mxnet_fixture_dir / "train.rec").read_bytes()
    assert (tmp_path / "train.idx").read_bytes() == (mxnet_fixture_dir / "train.idx").read_bytes()


def tricky_payloads():
    """Payloads that exercise every writer path: magic at aligned and unaligned offsets,
    consecutive magics, magic first/last, empty, odd lengths, array and scalar labels."""
    m = MAGIC_BYTES
    raw = [b"", b"a", b"abcd", m, m + m, b"xyzw" + m + b"tail", b"x" + m + b"yyy",
           b"abcd" + m + b"efgh" + m + m + b"ij", b"q" * 4093 + m + b"r" * 3, m + b"z" * 7]
    headers = [pack(IRHeader(0, 3.0, 7, 0), b"img" + m), pack(IRHeader(3, np.array([5, 1, 2], np.float32), 9, 4), m + b"xy")]
    return [(i, payload) for i, payload in enumerate(raw + headers)]


def run_mxnet(legacy_python, tmp_path, spec):
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    subprocess.run([str(legacy_python), str(HERE / "mxnet_reference.py"), str(tmp_path / "spec.json"),
                    str(tmp_path)], check=True, timeout=300)
    return json.loads((tmp_path / "result.json").read_text())


def test_byte_compatibility_with_real_mxnet(legacy_python, tmp_path):
    payloads = tricky_payloads()
    write_records(tmp_path / "ours.rec", payloads)
    images = [synthetic_image(1, k, 0, 112) for k in range(3)]
    jpegs = [encode_jpeg(img) for img in images]
    write_rec(tmp_path / "ds", [(img, k % 2) for k, img in enumerate(images)])
    spec = {"write": [[k, p.hex()] for k, p in payloads], "read": str(tmp_path / "ours.rec"),
            "unpack": [k for k, _ in payloads[-2:]], "decode": [j.hex() for j in jpegs]}
    result = run_mxnet(legacy_python, tmp_path, spec)
    # mxnet's writer and ours produce the same bytes, and each reads the other's file
    assert (tmp_path / "mx.rec").read_bytes() == (tmp_path / "ours.rec").read_bytes()
    assert (tmp_path / "mx.idx").read_text() == (tmp_path / "ours.idx").read_text()
    mx_read = {key: bytes.fromhex(raw) for key, raw, *_ in result["read"]}
    assert mx_read == dict(payloads)
    ours = RecordFile(tmp_path / "mx.rec")
    assert {k: ours.read(k) for k in ours.keys.tolist()} == dict(payloads)
    for key, _, flag, label, id1, id2, body in result["read"][-2:]:
        header, our_body = unpack(ours.read(key))
        assert (header.flag, np.asarray(header.label).tolist(), header.id, header.id2) == (flag, label, id1, id2)
        assert our_body == bytes.fromhex(body)
    # decoded pixels equal mx.image.imdecode
    for i, jpeg in enumerate(jpegs):
        assert np.array_equal(decode_rgb(jpeg, "test"), np.load(tmp_path / f"decoded_{i}.npy"))


def test_our_dataset_file_reads_in_real_mxnet(legacy_python, tmp_path):
    images = [(synthetic_image(2, k // 2, k % 2, 112), k // 2) for k in range(6)]
    write_rec(tmp_path / "ds", images)
    spec = {"write": [], "read": str(tmp_path / "ds" / "train.rec")}
    result = run_mxnet(legacy_python, tmp_path, spec)
    read = {key: (flag, label, id1, id2) for key, _, flag, label, id1, id2, _ in result["read"]}
    assert read[0] == (2, [7.0, 10.0], 0, 1)
    assert [read[k][1] for k in range(1, 7)] == [0, 0, 1, 1, 2, 2]
    assert [read[k][1] for k in (7, 8, 9)] == [[1, 3], [3, 5], [5, 7]]
    assert (tmp_path / "ds" / "property").read_text().strip() == "3,112,112"


def test_array_labels_and_headerless_files(tmp_path):
    img = encode_jpeg(synthetic_image(0, 1, 1, 16))
    records = [(k, pack(IRHeader(2, np.array([k + 10, 99], np.float32), k, 0), img)) for k in range(4)]
    write_records(tmp_path / "train.rec", records)
    dataset = RecFaceDataset(str(tmp_path))
    assert dataset.imgidx.tolist() == [0, 1, 2, 3]
    assert [dataset[i][1].item() for i in range(4)] == [10, 11, 12, 13]
    assert dataset[0][1].dtype == torch.long


def test_dataset_in_dataloader_workers(tmp_path):
    write_rec(tmp_path, [(synthetic_image(0, k, 0, 24), k) for k in range(8)])
    dataset = RecFaceDataset(str(tmp_path))
    dataset[0]  # the parent's map must not travel to the workers
    pickle.dumps(dataset)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2)
    labels = torch.cat([labels for _, labels in loader])
    assert sorted(labels.tolist()) == list(range(8))


def corrupt(tmp_path, mutate):
    write_rec(tmp_path, [(synthetic_image(0, k, 0, 24), k) for k in range(3)])
    mutate(tmp_path)
    return tmp_path


@pytest.mark.parametrize("mutate,message", [
    (lambda p: (p / "train.idx").unlink(), "index file missing"),
    (lambda p: (p / "train.idx").write_text((p / "train.idx").read_text().replace("\n3\t", "\n3\t9999")),
     "offset past the end"),
    (lambda p: (p / "train.rec").write_bytes(b"\0\0\0\0" + (p / "train.rec").read_bytes()[4:]), "bad magic"),
    (lambda p: (p / "train.rec").write_bytes((p / "train.rec").read_bytes()[:RecordFile(p / "train.rec").offset_of(3) + 30]),
     "truncated"),
    (lambda p: (p / "train.idx").write_text("\n".join((p / "train.idx").read_text().splitlines()[:2])), "lacks"),
    (lambda p: (p / "train.idx").write_text("0\tzero\n"), "bad index line"),
])
def test_corrupt_files_name_file_and_offset(tmp_path, mutate, message):
    path = corrupt(tmp_path, mutate)
    with pytest.raises(RecordError, match=message) as info:
        dataset = RecFaceDataset(str(path))
        for i in range(len(dataset)):
            dataset[i]
    assert "train." in str(info.value) and "offset" in str(info.value)


def test_unreadable_image_names_record(tmp_path):
    records = [(0, pack(IRHeader(0, 1.0, 0, 0), b"not a jpeg"))]
    write_records(tmp_path / "train.rec", records)
    with pytest.raises(ValueError, match=r"train.rec record 0 at byte offset 0"):
        RecFaceDataset(str(tmp_path))[0]


def test_encode_record_splits_only_at_aligned_magic():
    payload = b"ab" + MAGIC_BYTES + b"cd"
    assert encode_record(payload) == struct.pack("<II", 0xCED7230A, len(payload)) + payload
    split = encode_record(b"abcd" + MAGIC_BYTES + b"ef")
    assert split == (struct.pack("<II", 0xCED7230A, (1 << 29) | 4) + b"abcd"
                     + struct.pack("<II", 0xCED7230A, (3 << 29) | 2) + b"ef\0\0")


def test_keys_in_any_order(tmp_path):
    write_records(tmp_path / "x.rec", [(7, b"seven"), (3, b"three"), (11, b"eleven")])
    records = RecordFile(tmp_path / "x.rec")
    assert [records.read(k) for k in (3, 7, 11)] == [b"three", b"seven", b"eleven"]
    with pytest.raises(RecordError, match="key 4 is not in the index"):
        records.read(4)
    assert records.offsets.nbytes + records.keys.nbytes == 16 * 3
