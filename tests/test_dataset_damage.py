"""Dataset-level damage of a ``.rec`` folder: ``rec verify`` and ``rec info`` report it as one line
naming the file and offset with exit status 1 (a damaged dataset), never a traceback; training
refuses the same dataset before its first step, or at the record (from a DataLoader worker too)."""
from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch

from craft_plugin.cli import main
from craft_plugin.data.dataset import RecFaceDataset
from craft_plugin.data.recordio import IRHeader, RecordFile, pack, write_records
from craft_plugin.data.writer import write_rec
from craft_plugin.errors import RecordError

HEADER_LABEL = 8 + 24   # the header record's label floats: after the record head (8) and the IRHeader (24)


def small_dataset(folder):
    rng = np.random.default_rng(3)
    return write_rec(folder, [(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), k // 2) for k in range(6)])


def poke(path, offset, data):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def idx_lines(folder):
    return (folder / "train.idx").read_text().splitlines()


def write_idx(folder, lines):
    (folder / "train.idx").write_text("".join(line + "\n" for line in lines))


def header_label(folder, first_identity, end):
    poke(folder / "train.rec", HEADER_LABEL, struct.pack("<ff", first_identity, end))


# name -> (damage, file the error names, words of the problem)
DAMAGE = {
    "empty .rec beside an intact .idx": (lambda f: (f / "train.rec").write_bytes(b""), "train.idx", "past the end"),
    "empty .rec and .idx": (lambda f: ((f / "train.rec").write_bytes(b""), (f / "train.idx").write_bytes(b"")),
                            "train.idx", "lists no records"),
    "empty .idx": (lambda f: (f / "train.idx").write_bytes(b""), "train.idx", "lists no records"),
    "header claims more keys": (lambda f: header_label(f, 7, 14), "train.rec", "lacks at least 4"),
    "header label 1e10": (lambda f: header_label(f, 7, 1e10), "train.rec", "lacks at least"),
    "header label NaN": (lambda f: header_label(f, math.nan, 10), "train.rec", "not two whole record numbers"),
    "header first identity past its end": (lambda f: header_label(f, 11, 10), "train.rec", "not a valid range"),
    "index keys outside the header's range": (lambda f: write_idx(f, idx_lines(f) + ["12\t4"]), "train.rec",
                                              "keys outside 0..9"),
    "first record's magic": (lambda f: poke(f / "train.rec", 0, b"\0\0\0\0"), "train.rec", "bad magic"),
    "first record's length": (lambda f: poke(f / "train.rec", 4, struct.pack("<I", 1 << 28)), "train.rec",
                              "record truncated"),
    "property not UTF-8": (lambda f: (f / "property").write_bytes(b"\xff\xfe,16,16\n"), "property", "not ASCII"),
    "property 8,11\u00b2,112": (lambda f: (f / "property").write_text("8,11\u00b2,112", encoding="utf-8"),
                                "property", "not ASCII"),
    "property with a zero": (lambda f: (f / "property").write_text("3,0,16"), "property", ">= 1"),
    ".idx offset 10^100": (lambda f: write_idx(f, idx_lines(f)[:2] + ["2\t1" + "0" * 100] + idx_lines(f)[3:]),
                           "train.idx", "more than 18 digits"),
    ".idx key listed twice": (lambda f: write_idx(f, idx_lines(f) + [idx_lines(f)[3]]), "train.idx", "listed twice"),
    ".idx line not two numbers": (lambda f: write_idx(f, idx_lines(f) + ["7\tx7"]), "train.idx", "bad index line"),
    "two keys at one offset": (lambda f: write_idx(f, idx_lines(f)[:2] + ["2\t" + idx_lines(f)[1].split()[1]]
                                                   + idx_lines(f)[3:]), "train.idx", "share a byte offset"),
    "last record cut short": (lambda f: (f / "train.rec").write_bytes((f / "train.rec").read_bytes()[:-12]),
                              "train.rec", "the last record"),
}


@pytest.fixture
def dataset(tmp_path):
    return small_dataset(tmp_path / "data")


def one_line(err, *needles):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_dataset_damage_is_one_line_with_exit_1_and_refused_by_training(dataset, name, capfd):
    damage, file, words = DAMAGE[name]
    damage(dataset)
    named = str(dataset / file)
    for verb in ("verify", "info"):
        status = main(["rec", verb, str(dataset)])
        out, err = capfd.readouterr()
        assert status == 1, (verb, out, err)
        if verb == "info" and err.startswith("problem:"):   # info lists index problems beside its facts
            err = err.splitlines()[0]
        line = one_line(err, named, "at byte offset", words)
        assert verb == "info" or line.startswith("craft-plugin rec verify: damaged dataset:")
    with pytest.raises(RecordError, match=words) as refused:   # before the first step: at construction
        RecFaceDataset(str(dataset))
    assert named in str(refused.value)


def test_verify_json_carries_the_dataset_problem(dataset, capfd):
    import json

    DAMAGE["empty .rec and .idx"][0](dataset)
    assert main(["rec", "verify", str(dataset), "--json"]) == 1
    out, err = capfd.readouterr()
    report = json.loads(out)
    assert report["corrupt"] == [] and "lists no records" in report["dataset_problem"]


def test_a_missing_index_is_not_a_dataset_exit_2(dataset, capfd):
    (dataset / "train.idx").unlink()
    assert main(["rec", "verify", str(dataset)]) == 2
    one_line(capfd.readouterr().err, str(dataset / "train.idx"), "missing")


def test_a_reordered_index_reads_the_same_data(dataset):
    intact = RecFaceDataset(str(dataset))
    torch.manual_seed(0)
    before = [intact[i] for i in range(len(intact))]
    lines = idx_lines(dataset)
    write_idx(dataset, lines[::-1])   # the header record's line last: the header is key 0, not the first line
    reordered = RecFaceDataset(str(dataset))
    torch.manual_seed(0)
    after = [reordered[i] for i in range(len(reordered))]
    assert reordered.imgidx.tolist() == intact.imgidx.tolist() == [1, 2, 3, 4, 5, 6]
    assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(before, after))


def test_an_irheader_without_image_bytes_names_the_record_from_a_worker(tmp_path):
    from craft_plugin.data.transforms import encode_jpeg

    rng = np.random.default_rng(0)
    jpeg = encode_jpeg(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    labels = {1: math.nan}
    records = [(k, pack(IRHeader(0, labels.get(k, float(k)), k, 0), b"" if k == 2 else jpeg)) for k in range(4)]
    write_records(tmp_path / "train.rec", records)
    offsets = RecordFile(tmp_path / "train.rec").offsets.tolist()
    dataset = RecFaceDataset(str(tmp_path))
    for index, error, words in ((2, ValueError, f"train.rec record 2 at byte offset {offsets[2]}: no image bytes"),
                                (1, RecordError, f"train.rec at byte offset {offsets[1]}: record 1: label nan")):
        subset = torch.utils.data.Subset(dataset, [index])
        with pytest.raises(error) as raised:   # the type crosses the worker boundary
            list(torch.utils.data.DataLoader(subset, batch_size=1, num_workers=1))
        assert words in str(raised.value) and "buf.empty" not in str(raised.value)


def test_a_header_record_with_one_label_value(tmp_path, capfd):
    from craft_plugin.data.transforms import encode_jpeg

    jpeg = encode_jpeg(np.full((16, 16, 3), 128, np.uint8))
    write_records(tmp_path / "train.rec", [(0, pack(IRHeader(0, np.array([2.0], np.float32), 0, 1), b""))]
                  + [(k, pack(IRHeader(0, 0.0, k, 0), jpeg)) for k in (1, 2)])
    assert main(["rec", "verify", str(tmp_path)]) == 1
    one_line(capfd.readouterr().err, str(tmp_path / "train.rec"), "at byte offset 0", "holds 1 label values")
    with pytest.raises(RecordError, match="holds 1 label values"):
        RecFaceDataset(str(tmp_path))


@pytest.mark.parametrize("change, words", [
    (lambda lines: lines[:3] + lines[4:], "bytes in no indexed record"),            # a lost .idx line
    (lambda lines: lines[:-1], "the end of the file follows"),                     # the last record not indexed
])
def test_verify_finds_records_no_index_line_points_to(tmp_path, capfd, change, words):
    folder = write_rec(tmp_path / "headerless", [(np.full((16, 16, 3), k, np.uint8), k) for k in range(5)], header=False)
    write_idx(folder, change(idx_lines(folder)))
    RecFaceDataset(str(folder))   # training cannot see it without reading every record
    assert main(["rec", "verify", str(folder), "--json"]) == 1
    import json

    report = json.loads(capfd.readouterr().out)
    assert len(report["corrupt"]) == 1 and words in report["corrupt"][0]["problem"]


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_an_image_header_announcing_a_huge_size_is_refused_before_decoding(monkeypatch, ext):
    import cv2

    from craft_plugin.data.transforms import announced_size, decode_bgr

    data = bytearray(cv2.imencode(ext, np.full((16, 16, 3), 90, np.uint8))[1].tobytes())
    assert announced_size(bytes(data)) == (16, 16)
    if ext == ".png":
        data[16:24] = struct.pack(">II", 30000, 30000)
    else:
        sof = next(i for i in range(2, len(data) - 9) if data[i] == 0xFF and data[i + 1] == 0xC0)
        data[sof + 5:sof + 9] = struct.pack(">HH", 30000, 30000)
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded (OpenCV would allocate 2.7 GB)"))
    with pytest.raises(ValueError, match="record 3: its header announces a 30000x30000 image"):
        decode_bgr(bytes(data), "record 3")
