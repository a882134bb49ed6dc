"""Damaged ``.bin`` verification sets: ``load_bin`` and ``bin verify`` accept exactly the same
files (upstream's resize rule), pair labels are booleans or refused, and a damaged pickle is one
error naming the file."""
from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

from craft_plugin.cli import main
from craft_plugin.data.binfile import load_bin, read_bin_pairs
from craft_plugin.data.transforms import encode_jpeg


def image(height, width, seed=0):
    return encode_jpeg(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def write(path, bins, issame, protocol=2):
    path.write_bytes(pickle.dumps((bins, issame), protocol=protocol))
    return path


def one_line(err, *needles):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("size, accepted", [((112, 112), True), ((100, 100), True), ((224, 224), True),
                                            ((120, 112), False), ((112, 96), False), ((96, 112), False)])
def test_load_bin_and_bin_verify_accept_the_same_sizes(tmp_path, capfd, size, accepted):
    bins = [image(112, 112, k) for k in range(4)]
    bins[3] = image(*size, 9)
    path = write(tmp_path / "val.bin", bins, [True, False])
    status = main(["bin", "verify", str(path)])
    out = capfd.readouterr().out
    assert status == (0 if accepted else 1), out
    if accepted:
        data, issame = load_bin(str(path))
        assert tuple(data[0].shape) == (4, 3, 112, 112) and issame == [True, False]
        assert (size == (112, 112)) == ("resized" not in out)
    else:
        assert f"val.bin: image 3: image is {size[0]}x{size[1]}" in out
        with pytest.raises(ValueError, match=f"val.bin: image 3: image is {size[0]}x{size[1]}"):
            load_bin(str(path))


@pytest.mark.parametrize("label", [None, "no", 2, 0, 1, 1.0, b"\x01"])
def test_pair_labels_other_than_booleans_are_refused(tmp_path, capfd, label):
    path = write(tmp_path / "val.bin", [image(112, 112, k) for k in range(4)], [True, label])
    with pytest.raises(ValueError, match=re.escape(f"val.bin: pair label 1 is {label!r}")):
        read_bin_pairs(str(path))
    assert main(["bin", "verify", str(path)]) == 1
    one_line(capfd.readouterr().err, str(path), "pair label 1")


def test_numpy_booleans_are_booleans(tmp_path):
    bins = [image(112, 112, k) for k in range(4)]
    for issame in (np.array([True, False]), [np.bool_(True), np.bool_(False)]):
        assert read_bin_pairs(str(write(tmp_path / "val.bin", bins, issame)))[1] == [True, False]


def test_a_damaged_codec_name_is_one_line(tmp_path, capfd):
    raw = pickle.dumps(([image(112, 112), image(112, 112, 1)], [True]), protocol=2)
    assert b"latin1" in raw
    path = tmp_path / "lfw.bin"
    path.write_bytes(raw.replace(b"latin1", b"latin9", 1))
    with pytest.raises(ValueError, match="lfw.bin: truncated or not a .bin verification set .* byte offset"):
        read_bin_pairs(str(path))
    assert main(["bin", "verify", str(path)]) == 1
    one_line(capfd.readouterr().err, str(path), "damaged .bin")
    assert main(["bin", "info", str(path)]) == 2
    err = capfd.readouterr().err
    one_line(err, str(path))
    assert err.count(str(path)) == 1


def test_bin_info_on_a_rec_names_it_once(tmp_path, capfd):
    from craft_plugin.data.writer import write_rec

    write_rec(tmp_path, [(np.zeros((16, 16, 3), np.uint8), 0)])
    assert main(["bin", "info", str(tmp_path / "train.rec")]) == 2
    err = capfd.readouterr().err
    one_line(err, str(tmp_path / "train.rec"))
    assert err.count(str(tmp_path / "train.rec")) == 1


@pytest.mark.parametrize("entry", [np.zeros((112, 112, 3), np.float32), np.zeros((112, 112, 4), np.uint8), 7, None])
def test_entries_that_are_no_image_name_their_index(tmp_path, entry):
    bins = [image(112, 112, k) for k in range(4)]
    bins[2] = entry
    with pytest.raises(ValueError, match="val.bin: image 2: a "):
        load_bin(str(write(tmp_path / "val.bin", bins, [True, False])))
