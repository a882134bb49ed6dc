"""The command line as scripts use it: parsers without heavy imports, ``--json`` stdout that is
exactly one JSON document for every verb that reports facts, and one-line user errors (exit 2)."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from craft_plugin.cli import main
from craft_plugin.data.binfile import load_bin
from craft_plugin.data.recordio import RecordFile
from craft_plugin.data.writer import write_bin, write_rec
from craft_plugin._replica.synthetic import synthetic_image
from test_patch import stand_in_checkout


def run_cli(capfd, argv):
    """``(exit status, stdout, stderr)`` of ``craft-plugin ARGV``, captured at the file descriptors."""
    status = main(argv)
    out, err = capfd.readouterr()
    return status, out, err


def one_line_error(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def write_png(path: Path, rgb: np.ndarray) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture
def model(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    with torch.no_grad():
        net[0].weight[2].mul_(1e-3)
    path = tmp_path / "model.pt"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "data"
    write_rec(root, [(synthetic_image(0, k, j, 24), k) for k in range(3) for j in range(2)])
    return root


@pytest.fixture
def bin_file(tmp_path):
    pairs = [(synthetic_image(1, i, 0, 112), synthetic_image(1, i + i % 2, 1, 112), i % 2 == 0) for i in range(4)]
    return write_bin(tmp_path / "val.bin", pairs)


def test_parsers_import_no_torch_cv2_or_numpy():
    code = ("import sys; from craft_plugin.cli import build_parser; build_parser(); "
            "print([m for m in ('torch', 'cv2', 'numpy') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


JSON_VERBS = {
    "presets": lambda t, f: ["presets"],
    "patch --check": lambda t, f: ["patch", str(stand_in_checkout(t / "at")), "--check"],
    "patch (apply)": lambda t, f: ["patch", str(stand_in_checkout(t / "at"))],
    "patch --revert": lambda t, f: ["patch", str(stand_in_checkout(t / "at")), "--revert"],
    "inspect": lambda t, f: ["inspect", str(f["model"])],
    "rec info": lambda t, f: ["rec", "info", str(f["dataset"])],
    "rec verify": lambda t, f: ["rec", "verify", str(f["dataset"])],
    "bin info": lambda t, f: ["bin", "info", str(f["bin_file"])],
    "bin verify": lambda t, f: ["bin", "verify", str(f["bin_file"])],
}


@pytest.mark.parametrize("verb", sorted(JSON_VERBS))
def test_json_stdout_is_exactly_one_document(verb, tmp_path, capfd, model, dataset, bin_file):
    argv = JSON_VERBS[verb](tmp_path, {"model": model, "dataset": dataset, "bin_file": bin_file})
    status, out, _ = run_cli(capfd, argv + ["--json"])
    assert status == 0
    assert isinstance(json.loads(out), dict)   # the whole of stdout, not its last line


def test_patch_json_reports_the_apply(tmp_path, capfd):
    root = stand_in_checkout(tmp_path / "at")
    status, out, _ = run_cli(capfd, ["patch", str(root), "--json"])
    assert status == 0
    assert json.loads(out) == {"path": str(root), "action": "apply",
                               "patches": {"arcface_torch_hooks": "applied", "arcface_torch_compat": "applied"}}
    status, out, _ = run_cli(capfd, ["patch", str(root), "--json"])
    assert set(json.loads(out)["patches"].values()) == {"already applied"}


@pytest.mark.parametrize("given, what", [("insightface", "the insightface clone"),
                                         ("insightface/recognition", "insightface's recognition folder")])
def test_patch_on_a_folder_above_arcface_torch_names_the_folder_to_give(tmp_path, capfd, given, what):
    stand_in_checkout(tmp_path / "insightface" / "recognition" / "arcface_torch")
    status, _, err = run_cli(capfd, ["patch", str(tmp_path / given)])
    assert status == 2
    one_line_error(err, what, f"craft-plugin patch {tmp_path / 'insightface' / 'recognition' / 'arcface_torch'}")


@pytest.mark.parametrize("option, value, key", [("--threshold", "5", "threshold"), ("--threshold", "-1", "threshold"),
                                                ("--reference-quantile", "2", "reference_quantile")])
def test_inspect_validates_options_as_the_config(model, capfd, option, value, key):
    status, _, err = run_cli(capfd, ["inspect", str(model), option, value])
    assert status == 2
    one_line_error(err, option, f"config.reactivation.{key}")


def test_inspect_defaults_are_the_configs(model, capfd):
    from craft_plugin.reactivation.detection import Criterion
    from craft_plugin.reactivation.options import ReactivationOptions

    status, out, _ = run_cli(capfd, ["inspect", str(model), "--json"])
    defaults = ReactivationOptions()
    assert json.loads(out)["criterion"] == Criterion(defaults.criterion, defaults.threshold,
                                                     defaults.reference_quantile).describe()
    assert json.loads(out)["inactive"] == [2]


@pytest.mark.parametrize("name, content", [("face.jpg", None), ("train.rec", b"\x00" * 64)])
def test_inspect_on_a_file_that_is_no_model(tmp_path, capfd, name, content):
    path = tmp_path / name
    if content is None:
        write_png(path, synthetic_image(0, 0, 0, 32))
    else:
        path.write_bytes(content)
    status, _, err = run_cli(capfd, ["inspect", str(path)])
    assert status == 2
    one_line_error(err, str(path))


def test_inspect_onnx_without_the_onnx_package(tmp_path, capfd, monkeypatch):
    (tmp_path / "model.onnx").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "onnx", None)   # import onnx raises ImportError
    status, _, err = run_cli(capfd, ["inspect", str(tmp_path / "model.onnx")])
    assert status == 2
    one_line_error(err, "craft-plugin[onnx]")


def test_inspect_png_in_a_missing_folder(model, capfd, tmp_path):
    status, _, err = run_cli(capfd, ["inspect", str(model), "--png", str(tmp_path / "nope" / "x.png")])
    assert status == 2
    one_line_error(err, "--png", "does not exist")
    assert not (tmp_path / "nope").exists()


def test_bad_argument_is_one_line(capfd):
    with pytest.raises(SystemExit) as exit_:
        main(["inspect"])
    assert exit_.value.code == 2
    one_line_error(capfd.readouterr().err, "model")


def faces(root: Path, identities: int = 3, per: int = 2) -> Path:
    for identity in range(identities):
        folder = root / f"person_{identity}"
        folder.mkdir(parents=True)
        for j in range(per):
            write_png(folder / f"{j}.png", synthetic_image(5, identity, j, 24))
    return root


def test_rec_pack_writes_the_label_mapping_and_refuses_a_non_empty_folder(tmp_path, capfd):
    source = faces(tmp_path / "faces")
    status, _, err = run_cli(capfd, ["rec", "pack", str(source), str(tmp_path / "out")])
    assert status == 0 and "pack" in err   # the progress bar, on stderr
    assert (tmp_path / "out" / "labels.tsv").read_text().splitlines() == [
        "label\tidentity", "0\tperson_0", "1\tperson_1", "2\tperson_2"]
    before = (tmp_path / "out" / "train.rec").read_bytes()
    status, _, err = run_cli(capfd, ["rec", "pack", str(source), str(tmp_path / "out")])
    assert status == 2
    one_line_error(err, "OUT", "--force")
    assert (tmp_path / "out" / "train.rec").read_bytes() == before
    assert run_cli(capfd, ["rec", "pack", str(source), str(tmp_path / "out"), "--force"])[0] == 0


def test_rec_pack_refuses_an_empty_identity_folder(tmp_path, capfd):
    source = faces(tmp_path / "faces")
    (source / "person_1b").mkdir()
    status, _, err = run_cli(capfd, ["rec", "pack", str(source), str(tmp_path / "out")])
    assert status == 2
    one_line_error(err, "person_1b")
    assert not (tmp_path / "out").exists()


def test_rec_pack_into_a_missing_folder(tmp_path, capfd):
    status, _, err = run_cli(capfd, ["rec", "pack", str(faces(tmp_path / "faces")), str(tmp_path / "a" / "b")])
    assert status == 2
    one_line_error(err, "OUT", "does not exist")


def test_rec_info_reports_a_truncated_rec(dataset, capfd):
    rec = dataset / "train.rec"
    rec.write_bytes(rec.read_bytes()[:-30])
    status, out, _ = run_cli(capfd, ["rec", "info", str(dataset), "--json"])
    assert status == 1
    problems = json.loads(out)["index_problems"]
    assert len(problems) == 1 and "truncated" in problems[0]
    rec.write_bytes(rec.read_bytes()[:RecordFile(rec).offsets[3]])
    status, out, _ = run_cli(capfd, ["rec", "info", str(dataset), "--json"])
    assert status == 1 and "point past the end" in json.loads(out)["index_problems"][0]


def test_human_rec_info_says_whether_the_index_check_passed(dataset, capfd):
    status, out, _ = run_cli(capfd, ["rec", "info", str(dataset)])
    assert status == 0
    assert f"checked: all {len(RecordFile(dataset / 'train.rec'))} entries point inside the .rec" in out
    rec = dataset / "train.rec"
    rec.write_bytes(rec.read_bytes()[:-30])
    status, out, err = run_cli(capfd, ["rec", "info", str(dataset)])
    assert status == 1
    assert "does not fit the .rec: 1 problem(s)" in out and "checked" not in out and "truncated" in err


def test_rec_verify_names_the_offset_once(dataset, capfd):
    records = RecordFile(dataset / "train.rec")
    data = bytearray((dataset / "train.rec").read_bytes())
    start = records.offset_of(2) + 8 + 24
    data[start:start + 40] = b"\0" * 40
    (dataset / "train.rec").write_bytes(bytes(data))
    status, out, _ = run_cli(capfd, ["rec", "verify", str(dataset)])
    assert status == 1
    line = next(l for l in out.splitlines() if l.startswith("corrupt record 2"))
    assert line.count(str(records.offset_of(2))) == 1 and line.count("record 2") == 1


def test_rec_info_on_a_bin_points_to_bin_info(bin_file, capfd):
    status, _, err = run_cli(capfd, ["rec", "info", str(bin_file)])
    assert status == 2
    one_line_error(err, "bin info")


def test_bin_info_and_verify(bin_file, capfd):
    status, out, _ = run_cli(capfd, ["bin", "info", str(bin_file), "--json"])
    facts = json.loads(out)
    assert status == 0 and (facts["pairs"], facts["images"], facts["same"], facts["image_sizes"]) == (
        4, 8, 2, {"112x112": 8})
    bins, issame = pickle.loads(bin_file.read_bytes())
    bins[5] = b"not an image"
    bin_file.write_bytes(pickle.dumps((bins, issame), protocol=2))
    status, out, _ = run_cli(capfd, ["bin", "verify", str(bin_file), "--json"])
    report = json.loads(out)
    assert status == 1 and [(p["image"], p["pair"]) for p in report["problems"]] == [(5, 2)]


def test_bin_info_on_a_file_that_is_no_bin(tmp_path, capfd):
    (tmp_path / "x.bin").write_bytes(b"\x80\x02garbage")
    status, _, err = run_cli(capfd, ["bin", "info", str(tmp_path / "x.bin")])
    assert status == 2
    one_line_error(err, str(tmp_path / "x.bin"))


def test_bin_pack_writes_what_load_bin_reads(tmp_path, capfd):
    images = []
    for i in range(4):
        images.append(synthetic_image(3, i, 0, 112))
        write_png(tmp_path / f"{i}.png", images[-1])
    (tmp_path / "pairs.txt").write_text("# a b same\n0.png 1.png 0\n\n2.png 2.png 1\n")
    status, _, _ = run_cli(capfd, ["bin", "pack", str(tmp_path / "pairs.txt"), str(tmp_path / "val.bin")])
    assert status == 0
    raw = pickle.loads((tmp_path / "val.bin").read_bytes())
    assert raw[1] == [False, True] and raw[0][0] == (tmp_path / "0.png").read_bytes()   # files kept as they are
    (data, flipped), issame = load_bin(str(tmp_path / "val.bin"), (112, 112))
    assert issame == [False, True]
    for slot, index in enumerate((0, 1, 2, 2)):
        assert torch.equal(data[slot], torch.from_numpy(images[index].transpose(2, 0, 1).astype(np.float32)))
    assert torch.equal(flipped, data.flip(3))


@pytest.mark.parametrize("line, needle", [("0.png 1.png yes", "same 0 or 1"), ("0.png missing.png 1", "missing.png"),
                                          ("0.png small.png 1", "24x24")])
def test_bin_pack_refuses_a_bad_pairs_line(tmp_path, capfd, line, needle):
    write_png(tmp_path / "0.png", synthetic_image(3, 0, 0, 112))
    write_png(tmp_path / "small.png", synthetic_image(3, 1, 0, 24))
    (tmp_path / "pairs.txt").write_text(line + "\n")
    status, _, err = run_cli(capfd, ["bin", "pack", str(tmp_path / "pairs.txt"), str(tmp_path / "val.bin")])
    assert status == 2
    one_line_error(err, "line 1", needle)
    assert not (tmp_path / "val.bin").exists()


def test_bin_pack_refuses_to_replace_or_write_into_a_missing_folder(bin_file, tmp_path, capfd):
    write_png(tmp_path / "0.png", synthetic_image(3, 0, 0, 112))
    (tmp_path / "pairs.txt").write_text("0.png 0.png 1\n")
    status, _, err = run_cli(capfd, ["bin", "pack", str(tmp_path / "pairs.txt"), str(bin_file)])
    assert status == 2
    one_line_error(err, "--force")
    status, _, err = run_cli(capfd, ["bin", "pack", str(tmp_path / "pairs.txt"), str(tmp_path / "no" / "v.bin")])
    assert status == 2
    one_line_error(err, "does not exist")


def test_demo_refuses_an_out_folder_in_a_missing_folder(tmp_path, capfd):
    status, _, err = run_cli(capfd, ["demo", "--out", str(tmp_path / "a" / "b")])
    assert status == 2
    one_line_error(err, "--out")


def test_bin_pack_reads_in_arcface_torchs_load_bin_way_with_the_real_mxnet(tmp_path, capfd, legacy_python):
    """What upstream's ``eval/verification.py`` ``load_bin`` does: ``pickle.load(f, encoding='bytes')``
    then ``mx.image.imdecode`` per image; the pixels must be the images packed."""
    images = [synthetic_image(4, i, 0, 112) for i in range(2)]
    for i, rgb in enumerate(images):
        write_png(tmp_path / f"{i}.png", rgb)
    (tmp_path / "pairs.txt").write_text("0.png 1.png 0\n1.png 1.png 1\n")
    assert run_cli(capfd, ["bin", "pack", str(tmp_path / "pairs.txt"), str(tmp_path / "val.bin")])[0] == 0
    code = ("import pickle, sys, numpy as np, mxnet as mx\n"
            "bins, issame = pickle.load(open(sys.argv[1], 'rb'), encoding='bytes')\n"
            "np.save(sys.argv[2], np.stack([mx.image.imdecode(b).asnumpy() for b in bins]))\n"
            "print(list(issame))\n")
    out = subprocess.run([str(legacy_python), "-c", code, str(tmp_path / "val.bin"), str(tmp_path / "px.npy")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[False, True]"
    pixels = np.load(tmp_path / "px.npy")
    assert [np.array_equal(pixels[k], images[i]) for k, i in enumerate((0, 1, 1, 1))] == [True] * 4
