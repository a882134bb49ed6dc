"""``craft-plugin rec info|verify|pack``."""
from __future__ import annotations

import json

import cv2

from craft_plugin.cli import main
from craft_plugin.data.dataset import RecFaceDataset
from craft_plugin.data.recordio import RecordFile
from craft_plugin.data.writer import write_rec
from craft_plugin._replica.synthetic import synthetic_image


def last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_info_on_the_mxnet_fixture(mxnet_fixture_dir, capsys):
    assert main(["rec", "info", str(mxnet_fixture_dir), "--json"]) == 0
    facts = last_json(capsys)
    assert (facts["records"], facts["images"], facts["identities"], facts["image_size"]) == (10, 6, 3, [112, 112])
    assert facts["layout"].startswith("insightface") and facts["label"] == "scalar"


def test_verify_reports_each_corrupt_record(tmp_path, capsys):
    write_rec(tmp_path, [(synthetic_image(0, k, 0, 24), k) for k in range(4)])
    assert main(["rec", "verify", str(tmp_path), "--json"]) == 0
    assert last_json(capsys)["corrupt"] == []
    records = RecordFile(tmp_path / "train.rec")
    data = bytearray((tmp_path / "train.rec").read_bytes())
    for key in (2, 3):
        start = records.offset_of(key) + 8 + 24
        data[start:start + 40] = b"\0" * 40  # wreck the JPEG header of two images
    (tmp_path / "train.rec").write_bytes(bytes(data))
    assert main(["rec", "verify", str(tmp_path), "--json"]) == 1
    report = last_json(capsys)
    assert [(r["key"], r["offset"]) for r in report["corrupt"]] == [(2, records.offset_of(2)), (3, records.offset_of(3))]
    assert all("not a decodable image" in r["problem"] for r in report["corrupt"])


def test_pack_an_image_folder(tmp_path, capsys):
    for identity in range(3):
        folder = tmp_path / "faces" / f"person_{identity}"
        folder.mkdir(parents=True)
        for j in range(2):
            rgb = synthetic_image(5, identity, j, 112)
            cv2.imwrite(str(folder / f"{j}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert main(["rec", "pack", str(tmp_path / "faces"), str(tmp_path / "out")]) == 0
    dataset = RecFaceDataset(str(tmp_path / "out"))
    assert [dataset[i][1].item() for i in range(6)] == [0, 0, 1, 1, 2, 2]
    assert (tmp_path / "out" / "property").read_text().strip() == "3,112,112"
    (tmp_path / "faces" / "person_0" / "bad.jpg").write_bytes(b"nope")
    assert main(["rec", "pack", str(tmp_path / "faces"), str(tmp_path / "out2")]) == 2
    assert "bad.jpg" in capsys.readouterr().err and not (tmp_path / "out2" / "train.rec").exists()
