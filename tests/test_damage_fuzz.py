"""A seeded damage generator over every reader: small datasets (written by the plugin's writer, and
by the real mxnet 1.9.1 where the legacy venv is there), ``.bin`` sets and model files, each
mutated many ways (truncation, flipped bytes, zeroed ranges, reordered / duplicated / lost ``.idx``
lines, huge numbers, NaN, non-UTF-8 text, empty files). Every outcome must be one of:

- OK with the data training sees identical to the original's, or changed only inside the record
  (image, label) the mutation touched: RecordIO and pickles carry no checksums, so a flipped bit
  inside a JPEG or a label that stays a valid class cannot be told from real data;
- one clean error naming the file (and byte offset): exit status 1 from ``rec verify`` / ``bin
  verify`` (``rec info`` 0 or 1), a ValueError (RecordError) from training's reader, exit 2 from
  ``inspect``.

Never an exception escaping the command line (a traceback), never another exception type, never
a hang (each case runs under an alarm). The counts of each outcome are printed (``pytest -s``)."""
from __future__ import annotations

import contextlib
import io
import json
import math
import pickle
import random
import shutil
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hang_guard import hang_guard

from craft_plugin.cli import main
from craft_plugin.data.binfile import load_bin
from craft_plugin.data.dataset import RecFaceDataset, read_sample
from craft_plugin.data.writer import write_bin, write_rec

SECONDS = 20   # per case: far above what a tiny file takes; reaching it is a hang


def cli(argv):
    """``(status, stdout, stderr)`` of ``craft-plugin ARGV`` in this process; an exception escaping
    ``main`` (what a user sees as a traceback) fails the test with the case named."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except Exception as exc:  # noqa: BLE001 - the point of the test
            raise AssertionError(f"craft-plugin {' '.join(argv)} raised {type(exc).__name__}: {exc}") from exc
    return status, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------------------------------
# mutations: (description, touched byte range of the file or None, new bytes)


def flip(rng, data):
    data = bytearray(data)
    at = rng.randrange(len(data))
    count = rng.randint(1, 3)
    for i in range(at, min(at + count, len(data))):
        data[i] ^= rng.randint(1, 255)
    return f"flip {count} at {at}", (at, at + count), bytes(data)


def zero(rng, data):
    at = rng.randrange(len(data))
    count = rng.randint(1, 64)
    return f"zero {count} at {at}", (at, at + count), data[:at] + bytes(len(data[at:at + count])) + data[at + count:]


def truncate(rng, data):
    at = rng.randrange(len(data))
    return f"truncate at {at}", None, data[:at]


def empty(rng, data):
    return "empty", None, b""


def number_at(rng, data, offsets):
    """A huge, negative, NaN or infinite number written over a record's length, flag or label."""
    offset = rng.choice(offsets)
    field, fmt = rng.choice([(4, "<I"), (8, "<I"), (12, "<f"), (32, "<f"), (36, "<f")])
    values = {"<I": [0, 1, 2, 3, 0xFFFFFFFF, 1 << 29, 7 << 29], "<f": [math.nan, math.inf, -1.0, 1e10, 2.0, 0.5, 3.0]}
    value = rng.choice(values[fmt])
    at = offset + field
    if at + 4 > len(data):
        return truncate(rng, data)
    return f"{value} ({fmt}) at {at}", (at, at + 4), data[:at] + struct.pack(fmt, value) + data[at + 4:]


REC_BYTE_MUTATIONS = (flip, flip, zero, truncate, number_at, number_at)


def idx_mutation(rng, text):
    lines = text.splitlines()
    kind = rng.choice(["shuffle", "duplicate", "drop", "swap offsets", "huge offset", "huge key", "garbage",
                       "non-utf8", "empty", "cut", "negative", "offset + 4", "blank lines"])
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    if kind == "shuffle":
        rng.shuffle(lines)
    elif kind == "duplicate":
        lines.insert(j, lines[i])
    elif kind == "drop":
        del lines[i]
    elif kind == "swap offsets":
        (ki, oi), (kj, oj) = lines[i].split("\t"), lines[j].split("\t")
        lines[i], lines[j] = f"{ki}\t{oj}", f"{kj}\t{oi}"
    elif kind == "huge offset":
        lines[i] = lines[i].split("\t")[0] + "\t1" + "0" * rng.choice([12, 18, 19, 40, 100])
    elif kind == "huge key":
        lines[i] = "9" * rng.choice([5, 18, 19, 60]) + "\t" + lines[i].split("\t")[1]
    elif kind == "garbage":
        lines.insert(i, rng.choice(["x\ty", "1 2 3", "\u00b9\t0", "-\t4", "0x10\t0"]))
    elif kind == "negative":
        lines[i] = lines[i].split("\t")[0] + "\t-8"
    elif kind == "offset + 4":
        key, offset = lines[i].split("\t")
        lines[i] = f"{key}\t{int(offset) + 4}"
    elif kind == "blank lines":
        lines.insert(i, "")
    raw = "".join(line + "\n" for line in lines).encode()
    if kind == "non-utf8":
        raw = raw[:5] + b"\xff\xfe" + raw[5:]
    elif kind == "empty":
        raw = b""
    elif kind == "cut":
        raw = raw[:rng.randrange(len(raw))]
    return f".idx {kind} ({i}, {j})", raw


def property_mutation(rng, text):
    kind = rng.choice(["8,11\u00b2,112", "\xff\xfe", "99999999999999999999,16,16", "-3,16,16", "3,16", "",
                       "3,16,16,16", "3.0,16,16", "3,16,16\n4,16,16\n", "nan,16,16", "missing", "2,16,16",
                       "3,17,16"])
    if kind == "missing":
        return "property missing", None
    raw = kind.encode("latin1") if kind == "\xff\xfe" else kind.encode("utf-8")
    return f"property {kind!r}", raw


# ---------------------------------------------------------------------------------------------
# the .rec oracle


def training_view(folder):
    """What training reads: ``[(key, label, image bytes)]`` in dataset order, or the error."""
    dataset = RecFaceDataset(str(folder))
    return [(int(key), *reversed(read_sample(dataset.records, int(key), prop=dataset.property)))
            for key in dataset.imgidx.tolist()]


def record_spans(folder):
    """``key -> (start, end)`` of every record's bytes in the intact ``.rec``."""
    lines = [line.split("\t") for line in (folder / "train.idx").read_text().splitlines()]
    starts = sorted((int(offset), int(key)) for key, offset in lines)
    size = (folder / "train.rec").stat().st_size
    return {key: (start, (starts[i + 1][0] if i + 1 < len(starts) else size)) for i, (start, key) in enumerate(starts)}


def check_rec_case(folder, original, spans, touched, outcomes, case):
    rec_path = str(folder)
    with hang_guard(SECONDS, f"case {case}"):
        status, out, err = cli(["rec", "verify", rec_path, "--json"])
        assert status in (1, 0), (case, status, err)
        report = json.loads(out)
        if status == 1:
            if "dataset_problem" in report:
                lines = [line for line in err.strip().splitlines() if line.strip()]
                assert len(lines) == 1 and rec_path in lines[0] and "byte offset" in lines[0], (case, err)
            else:
                assert report["corrupt"] and all(r["problem"] and isinstance(r["offset"], int)
                                                 for r in report["corrupt"]), (case, report)
        info_status, info_out, info_err = cli(["rec", "info", rec_path, "--json"])
        assert info_status in (0, 1), (case, info_status, info_err)
        json.loads(info_out)
        try:
            view = training_view(folder)
        except ValueError as exc:   # RecordError included
            assert rec_path in str(exc) and "byte offset" in str(exc), (case, exc)
            assert status == 1, (case, "training refuses what rec verify passes", exc)
            outcomes["error"] += 1
            return
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"{case}: training raised {type(exc).__name__}: {exc}") from exc
    if status == 1:
        outcomes["verify refuses, training reads"] += 1   # damage outside what training reads, or the file tiling
        return
    if [k for k, _, _ in view] == [k for k, _, _ in original] and all(
            a[1] == b[1] and np.array_equal(a[2], b[2]) for a, b in zip(view, original)):
        outcomes["ok, identical"] += 1
        return
    def content(rows):
        return sorted((label, image.tobytes()) for _, label, image in rows)

    if content(view) == content(original):   # .idx lines whose offsets were swapped: the key -> record map
        outcomes["ok, same records under other keys"] += 1   # is all an .idx says
        return
    assert touched is not None and len(view) == len(original), (case, "data changed")
    changed = [a[0] for a, b in zip(view, original) if a[0] != b[0] or a[1] != b[1] or not np.array_equal(a[2], b[2])]
    inside = [key for key in changed if spans[key][0] <= touched[0] and touched[1] <= spans[key][1]]
    assert changed == inside and len(changed) == 1, (case, "data changed outside the touched record", changed)
    outcomes["ok, one record's content changed (no checksum)"] += 1


def rec_cases(base: Path, work: Path, count: int, seed: int):
    rng = random.Random(seed)
    offsets = [int(line.split("\t")[1]) for line in (base / "train.idx").read_text().splitlines()]
    original, spans = training_view(base), record_spans(base)
    outcomes = Counter()
    for number in range(count):
        folder = work / f"case{number}"
        shutil.copytree(base, folder)
        target = rng.choices(["rec", "idx", "property"], weights=[6, 3, 1])[0]
        touched = None
        if target == "rec":
            mutation = rng.choice(REC_BYTE_MUTATIONS)
            data = (folder / "train.rec").read_bytes()
            what, touched, data = (mutation(rng, data, offsets) if mutation is number_at else mutation(rng, data))
            (folder / "train.rec").write_bytes(data)
        elif target == "idx":
            what, raw = idx_mutation(rng, (folder / "train.idx").read_text())
            (folder / "train.idx").write_bytes(raw)
        else:
            what, raw = property_mutation(rng, (folder / "property").read_text())
            (folder / "property").unlink()
            if raw is not None:
                (folder / "property").write_bytes(raw)
        if rng.random() < 0.05:
            what += " + empty .rec"
            (folder / "train.rec").write_bytes(b"")
            touched = None
        check_rec_case(folder, original, spans, touched, outcomes, f"seed {seed} case {number}: {target} {what}")
        shutil.rmtree(folder)
    print(f"\n{base.name}: {count} damaged copies: {dict(outcomes)}")
    return outcomes


def plugin_dataset(folder, header=True):
    rng = np.random.default_rng(5)
    return write_rec(folder, [(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), k // 2) for k in range(6)],
                     header=header)


def test_damaged_rec_datasets_written_by_the_plugin(tmp_path):
    outcomes = rec_cases(plugin_dataset(tmp_path / "insightface-layout"), tmp_path, 200, seed=21)
    assert outcomes["error"] > 50 and outcomes["ok, identical"] > 5
    outcomes = rec_cases(plugin_dataset(tmp_path / "headerless", header=False), tmp_path, 60, seed=22)
    assert outcomes["error"] > 15


def test_damaged_rec_datasets_written_by_mxnet(mxnet_fixture_dir, tmp_path):
    base = tmp_path / "mxnet-1.9.1"
    base.mkdir()
    for name in ("train.rec", "train.idx", "property"):
        shutil.copy(mxnet_fixture_dir / name, base / name)
    assert rec_cases(base, tmp_path, 60, seed=23)["error"] > 15


# ---------------------------------------------------------------------------------------------
# .bin


def bin_view(path):
    data, issame = load_bin(str(path), (16, 16))
    return data[0], issame


def check_bin_case(path, original, outcomes, case):
    with hang_guard(SECONDS, f"case {case}"):
        status, out, err = cli(["bin", "verify", str(path), "--json", "--image-size", "16"])
        assert status in (0, 1), (case, status, err)
        report = json.loads(out)
        assert all(str(path) in p["problem"] for p in report["problems"]), (case, report)
        if status == 1 and report.get("images") is None:
            assert len(err.strip().splitlines()) == 1 and str(path) in err, (case, err)
        info_status, _, info_err = cli(["bin", "info", str(path)])
        assert info_status in (0, 2), (case, info_err)
        assert info_status == 0 or (len(info_err.strip().splitlines()) == 1 and str(path) in info_err), (case, info_err)
        try:
            data, issame = bin_view(path)
        except (ValueError, pickle.UnpicklingError) as exc:   # the latter: a global the unpickler refuses
            assert str(path) in str(exc), (case, exc)
            assert status == 1, (case, "load_bin refuses what bin verify passes", exc)
            outcomes["error"] += 1
            return
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"{case}: load_bin raised {type(exc).__name__}: {exc}") from exc
    assert status == 0, (case, "bin verify refuses what load_bin loads", report)
    if torch.equal(data, original[0]) and issame == original[1]:
        outcomes["ok, identical"] += 1
        return
    changed = int((data != original[0]).flatten(1).any(1).sum()) + sum(a != b for a, b in zip(issame, original[1]))
    assert data.shape == original[0].shape and len(issame) == len(original[1]) and changed == 1, (case, changed)
    outcomes["ok, one image or label changed (no checksum)"] += 1


def bin_cases(base: Path, work: Path, count: int, seed: int):
    rng = random.Random(seed)
    original = bin_view(base)
    raw = base.read_bytes()
    outcomes = Counter()
    for number in range(count):
        path = work / f"case{number}.bin"
        mutation = rng.choice((flip, flip, zero, truncate, empty, flip))
        what, _, data = mutation(rng, raw)
        path.write_bytes(data)
        check_bin_case(path, original, outcomes, f"seed {seed} case {number}: {what}")
    print(f"\n{base.name}: {count} damaged copies: {dict(outcomes)}")
    return outcomes


def test_damaged_bins(tmp_path):
    rng = np.random.default_rng(6)
    images = [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(8)]
    base = write_bin(tmp_path / "val.bin", [(images[2 * i], images[2 * i + 1], i % 2 == 0) for i in range(4)])
    assert bin_cases(base, tmp_path, 80, seed=31)["error"] > 20
    bins, issame = pickle.loads(base.read_bytes())
    for protocol in (0, 4):   # text and framed pickles damage differently
        other = tmp_path / f"val_p{protocol}.bin"
        other.write_bytes(pickle.dumps((bins, issame), protocol=protocol))
        bin_cases(other, tmp_path, 30, seed=32 + protocol)


# ---------------------------------------------------------------------------------------------
# model files given to inspect


def check_model_case(path, outcomes, case):
    with hang_guard(SECONDS, f"case {case}"):
        status, out, err = cli(["inspect", str(path), "--json", "--png", str(path.with_suffix(".png"))])
    if status == 0:
        json.loads(out)
        outcomes["ok"] += 1
        return
    assert status == 2, (case, status, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], (case, err)
    outcomes["error"] += 1


def model_cases(base: Path, work: Path, count: int, seed: int):
    rng = random.Random(seed)
    raw = base.read_bytes()
    outcomes = Counter()
    for number in range(count):
        path = work / f"case{number}{base.suffix}"
        what, _, data = rng.choice((flip, flip, zero, truncate, empty))(rng, raw)
        path.write_bytes(data)
        check_model_case(path, outcomes, f"seed {seed} case {number}: {base.name} {what}")
    print(f"\n{base.name}: {count} damaged copies: {dict(outcomes)}")
    return outcomes


def test_damaged_model_files(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    torch.save(net.state_dict(), tmp_path / "model.pt")
    assert model_cases(tmp_path / "model.pt", tmp_path, 50, seed=41)["error"] > 10
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(8, 3, 3, 3)).astype(np.float32), "conv1.weight")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "conv1.weight"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])], [weight])
    onnx.save(helper.make_model(graph), str(tmp_path / "model.onnx"))
    assert model_cases(tmp_path / "model.onnx", tmp_path, 40, seed=42)["error"] > 5
