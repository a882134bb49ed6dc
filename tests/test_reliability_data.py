"""Issue 11: datasets that training must refuse with the file named."""
from __future__ import annotations

import pytest

from craft_plugin.data.dataloader import get_dataloader


@pytest.mark.parametrize("present, missing", [("train.rec", "train.idx"), ("train.idx", "train.rec")])
def test_a_rec_without_its_idx_is_named_never_handed_to_the_image_folder_fallback(tmp_path, present, missing):
    (tmp_path / present).write_bytes(b"\x00" * 64)
    (tmp_path / "property").write_text("2,112,112\n")
    called = []
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / missing}: missing beside {present}"):
        get_dataloader(str(tmp_path), 0, 8, fallback=lambda *args: called.append(args))
    assert called == []


def small_rec(folder, header=True):
    import numpy as np

    from craft_plugin.data.writer import write_rec

    rng = np.random.default_rng(0)
    images = [(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), label) for label in (0, 0, 1, 1, 2, 2)]
    return write_rec(folder, images, header=header)


def rec_config(folder, **overrides):
    from easydict import EasyDict

    return EasyDict({"rec": str(folder), "num_classes": 3, "num_image": 6, **overrides})


@pytest.mark.parametrize("key, value, expected", [("num_classes", 2, "3, the class count in"),
                                                  ("num_image", 7, "6, the number of image records in")])
def test_config_counts_must_match_the_dataset(tmp_path, key, value, expected):
    from craft_plugin.data.rec_reader_feature import check_dataset_counts
    from craft_plugin.errors import ConfigError

    folder = small_rec(tmp_path)
    check_dataset_counts(rec_config(folder))
    with pytest.raises(ConfigError, match=f"config.{key} = {value} is not allowed: expected {expected}"):
        check_dataset_counts(rec_config(folder, **{key: value}))


def test_a_nan_label_names_the_record(tmp_path):
    import struct

    from craft_plugin.data.dataset import RecFaceDataset
    from craft_plugin.data.recordio import RecordFile
    from craft_plugin.errors import RecordError

    folder = small_rec(tmp_path, header=False)
    records = RecordFile(folder / "train.rec", folder / "train.idx")
    offset = int(records.offset_of(3))
    with open(folder / "train.rec", "r+b") as handle:  # magic, length, then IRHeader (flag, label, ...)
        handle.seek(offset + 8)
        assert struct.unpack("<I", handle.read(4))[0] == 0
        handle.write(struct.pack("<f", float("nan")))
    dataset = RecFaceDataset(str(folder))
    dataset[2]
    with pytest.raises(RecordError, match=f"train.rec at byte offset {offset}: record 3: label nan is not a class"):
        dataset[3]


@pytest.mark.parametrize("property_text, problem", [("3,20,20", "image is 16x16, property says 20x20"),
                                                    ("2,16,16", "label 2 is not below property's class count 2")])
def test_images_and_labels_must_fit_the_property(tmp_path, property_text, problem):
    from craft_plugin.data.dataset import RecFaceDataset
    from craft_plugin.errors import RecordError

    folder = small_rec(tmp_path, header=False)
    (folder / "property").write_text(property_text)
    dataset = RecFaceDataset(str(folder))
    with pytest.raises(RecordError, match=problem):
        for index in range(len(dataset)):
            dataset[index]


def test_a_matching_property_reads_every_record(tmp_path):
    from craft_plugin.data.dataset import RecFaceDataset

    folder = small_rec(tmp_path, header=False)
    dataset = RecFaceDataset(str(folder))
    assert dataset.property == (3, 16, 16)
    assert [int(dataset[i][1]) for i in range(len(dataset))] == [0, 0, 1, 1, 2, 2]


def test_a_jpeg_with_its_second_half_zeroed_is_corrupt_in_training(tmp_path):
    import numpy as np

    from craft_plugin.data.dataset import RecFaceDataset
    from craft_plugin.data.recordio import RecordFile
    from craft_plugin.data.transforms import decode_bgr, encode_jpeg

    rng = np.random.default_rng(1)
    jpeg = encode_jpeg(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    damaged = jpeg[: len(jpeg) // 2] + bytes(len(jpeg) - len(jpeg) // 2)
    assert decode_bgr(jpeg + bytes(3), "padded").shape == (16, 16, 3)  # zero padding after EOI is fine
    with pytest.raises(ValueError, match="zeroed: JPEG of .* without its end marker"):
        decode_bgr(damaged, "zeroed")
    folder = small_rec(tmp_path, header=False)
    records = RecordFile(folder / "train.rec", folder / "train.idx")
    header_size = 8 + 24  # magic, length, IRHeader
    offset, length = int(records.offset_of(4)), len(records.read_unpacked(4)[1])
    with open(folder / "train.rec", "r+b") as handle:
        handle.seek(offset + header_size + length // 2)
        handle.write(bytes(length - length // 2))
    dataset = RecFaceDataset(str(folder))
    with pytest.raises(ValueError, match="record 4 at byte offset .* without its end marker"):
        dataset[4]


def test_jpegs_written_by_mxnet_pass_the_end_marker_check(mxnet_fixture_dir):
    from craft_plugin.data.dataset import RecFaceDataset

    dataset = RecFaceDataset(str(mxnet_fixture_dir))
    for index in range(len(dataset)):
        dataset[index]


def test_rec_verify_reports_what_training_refuses(tmp_path):
    """Each damaged record is one problem in rec verify, and the same record fails in training."""
    import struct

    from craft_plugin.data.dataset import RecFaceDataset
    from craft_plugin.data.inventory import plan, verify
    from craft_plugin.data.recordio import RecordFile

    folder = small_rec(tmp_path, header=False)
    (folder / "property").write_text("2,16,16")       # labels go to 2: records 4 and 5 are out of range
    records = RecordFile(folder / "train.rec", folder / "train.idx")
    with open(folder / "train.rec", "r+b") as handle:
        handle.seek(int(records.offset_of(1)) + 12)
        handle.write(struct.pack("<f", float("nan")))
        offset, length = int(records.offset_of(2)), len(records.read_unpacked(2)[1])
        handle.seek(offset + 32 + length // 2)
        handle.write(bytes(length - length // 2))
    problems = {r["key"]: r["problem"] for r in verify(records, plan(records)) if r["problem"]}
    assert sorted(problems) == [1, 2, 4, 5]
    assert "label nan" in problems[1] and "end marker" in problems[2]
    assert problems[4] == "label 2 is not below property's class count 2"
    dataset = RecFaceDataset(str(folder))
    for index in range(6):
        if index in problems:
            with pytest.raises(ValueError):
                dataset[index]
        else:
            dataset[index]
