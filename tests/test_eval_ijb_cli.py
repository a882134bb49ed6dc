"""craft-plugin eval ijb end to end on a synthetic IJB-C set: one JSON document, the files under --out,
scores equal to a reference written here from the saved features, rescoring from --features
without images, two gloo processes under torchrun giving the single process's features, and
every bad input one line with exit 2 and nothing written."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from craft_plugin.cli import main
from craft_plugin.evaluation.roc import FAR_TARGETS, far_key
from craft_plugin.evaluation.synthetic import write_synthetic_ijb
from eval_model_helpers import EMBEDDING_SIZE, MODULE, FeatureMap, save_trained_tiny

COUNTS = dict(identities=4, templates_per_identity=3, media_per_template=2, max_frames=2)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_ijb")
    counts = write_synthetic_ijb(root / "IJBC", seed=1, **COUNTS)
    save_trained_tiny(root / "model.pt")
    return root, counts


def argv(root, out, *extra):
    return ["eval", "ijb", str(root / "model.pt"), "--ijb", str(root / "IJBC"), "--target", "IJBC", *MODULE,
            "--device", "cpu", "--batch-size", "8", "--workers", "0", "--out", str(out), "--json", *extra]


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def reference_scores(meta_dir, raw, flip=True, norm_score=True, detector_score=True):
    """eval_ijbc.py's steps written out with loops: flip sum, norm, faceness, media mean, template sum,
    L2 norm, cosine per pair."""
    rows = [line.split() for line in (meta_dir / "ijbc_name_5pts_score.txt").read_text().splitlines()]
    faceness = np.array([r[-1] for r in rows]).astype(np.float32)
    tid_mid = {r[0]: (int(r[1]), int(r[2])) for r in
               (line.split() for line in (meta_dir / "ijbc_face_tid_mid.txt").read_text().splitlines())}
    feats = {}
    for i, r in enumerate(rows):
        x = raw[i, 0] + raw[i, 1] if flip else raw[i, 0].copy()
        if not norm_score:
            x = x / np.sqrt(np.sum(x ** 2))
        if detector_score:
            x = x * faceness[i]
        feats.setdefault(tid_mid[r[0]][0], {}).setdefault(tid_mid[r[0]][1], []).append(x)
    template = {}
    for t, medias in feats.items():
        total = sum(np.mean(v, axis=0) for _, v in sorted(medias.items())).astype(np.float64)
        template[t] = total / np.linalg.norm(total)
    pairs = [tuple(map(int, line.split())) for line in (meta_dir / "ijbc_template_pair_label.txt").read_text().splitlines()]
    return np.array([template[a] @ template[b] for a, b, _ in pairs]), np.array([lab for _, _, lab in pairs])


def test_json_document_files_and_scores(release, tmp_path, capsys):
    root, counts = release
    code, out, err = run_cli(argv(root, tmp_path / "out"), capsys)
    assert code == 0, err
    doc = json.loads(out)                               # exactly one JSON document on stdout
    keys = [far_key(f) for f in FAR_TARGETS]
    assert keys == ["1e-06", "1e-05", "1e-04", "1e-03", "1e-02", "1e-01"]
    for rule in ("tar_at_far", "tar_at_far_strict"):
        assert sorted(doc[rule]) == sorted(keys) and all(0.0 <= doc[rule][k] <= 1.0 for k in keys)
    assert (doc["kind"], doc["target"]) == ("ijb", "IJBC")
    assert (doc["images"], doc["templates"], doc["pairs"]) == (counts["images"], counts["templates"], counts["pairs"])
    assert doc["options"] == {"flip": True, "norm_score": True, "detector_score": True}
    assert doc["identification"] is not None and doc["model"]["format"] == "torch"
    assert "nearest (upstream)" in err and "embed IJBC" in err   # the human table and the progress bar
    files = doc["files"]
    assert json.loads((tmp_path / "out" / "ijbc_results.json").read_text()) == doc
    raw = np.load(files["features"])
    assert raw.shape == (counts["images"], 2, EMBEDDING_SIZE) and raw.dtype == np.float32
    record = json.loads(open(files["features"] + ".json").read())
    assert (record["images"], record["dim"], record["target"]) == (counts["images"], EMBEDDING_SIZE, "IJBC")
    expected, labels = reference_scores(root / "IJBC" / "meta", raw)
    scores = np.load(files["scores"])
    assert scores.shape == (counts["pairs"],) and np.allclose(scores, expected, rtol=0, atol=1e-6)
    pairs = np.load(files["pairs"])
    assert np.array_equal(pairs["labels"], labels) and pairs["p1"].size == counts["pairs"]
    assert open(files["roc_plot"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["ijbc_features.npy", "ijbc_features.npy.json", "ijbc_pairs.npz", "ijbc_results.json", "ijbc_roc.png",
         "ijbc_scores.npy"])


def own_copy(release, tmp_path):
    """A copy of the release and its model.pt that a test may damage."""
    root, _ = release
    data = tmp_path / "data"
    shutil.copytree(root / "IJBC", data / "IJBC")
    shutil.copy(root / "model.pt", data / "model.pt")
    return data


def test_rescoring_from_features_reads_no_image(release, tmp_path, capsys):
    data = own_copy(release, tmp_path)
    features = tmp_path / "features.npy"
    code, first, err = run_cli(argv(data, tmp_path / "a", "--features", str(features)), capsys)
    assert code == 0, err and features.is_file()
    fresh_no_flip = json.loads(run_cli(argv(data, tmp_path / "b", "--no-flip", "--no-detector-score"), capsys)[1])
    shutil.rmtree(data / "IJBC" / "loose_crop")           # rescoring must not need the images
    code, again, err = run_cli(argv(data, tmp_path / "c", "--features", str(features)), capsys)
    assert code == 0, err and "rescored from saved features" in err
    a, c = json.loads(first), json.loads(again)
    for key in ("tar_at_far", "tar_at_far_strict", "identification", "images", "templates", "pairs"):
        assert a[key] == c[key]
    assert np.array_equal(np.load(tmp_path / "a" / "ijbc_scores.npy"), np.load(tmp_path / "c" / "ijbc_scores.npy"))
    code, changed, err = run_cli(argv(data, tmp_path / "d", "--features", str(features), "--no-flip",
                                      "--no-detector-score"), capsys)
    assert code == 0, err
    d = json.loads(changed)
    assert d["options"] == {"flip": False, "norm_score": True, "detector_score": False}
    assert np.array_equal(np.load(tmp_path / "d" / "ijbc_scores.npy"), np.load(tmp_path / "b" / "ijbc_scores.npy"))
    assert d["tar_at_far"] == fresh_no_flip["tar_at_far"]
    expected, _ = reference_scores(data / "IJBC" / "meta", np.load(features), flip=False, detector_score=False)
    assert np.allclose(np.load(tmp_path / "d" / "ijbc_scores.npy"), expected, rtol=0, atol=1e-6)
    assert not np.allclose(np.load(tmp_path / "d" / "ijbc_scores.npy"), np.load(tmp_path / "a" / "ijbc_scores.npy"))


def test_torchrun_joins_a_gloo_group_and_rank_0_writes(release, tmp_path, capsys):
    """Two real gloo processes as the docs launch them: torchrun starts the CLI, which joins the group
    itself; rank 1 embeds its share and prints nothing (stdout stays one JSON document)."""
    root, _ = release
    assert run_cli(argv(root, tmp_path / "one"), capsys)[0] == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "craft_plugin.cli", *argv(root, tmp_path / "two")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    f1, f2 = np.load(tmp_path / "one" / "ijbc_features.npy"), np.load(tmp_path / "two" / "ijbc_features.npy")
    assert np.allclose(f1, f2, rtol=0, atol=1e-6 * np.abs(f1).max())
    assert json.loads(done.stdout)["tar_at_far"] == json.loads((tmp_path / "one" / "ijbc_results.json").read_text())["tar_at_far"]


def write_onnx(path, channels, size):
    """A one-node graph: an Identity on (1, channels, size, size) or, for 3 channels, a global pooling
    to a (N, 3) "embedding"."""
    from onnx import TensorProto, helper, save

    if channels == 3:
        nodes = [helper.make_node("GlobalAveragePool", ["data"], ["pooled"]),
                 helper.make_node("Flatten", ["pooled"], ["out"])]
        out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])
        shape = ["N", 3, size, size]
    else:
        nodes = [helper.make_node("Identity", ["data"], ["out"])]
        shape = [1, channels, size, size]
        out = helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, shape)], [out])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(path))


def use_onnx(model_args, path):
    model_args[2] = str(path)
    for option in ("--module", "--network", "--embedding-size"):
        at = model_args.index(option)
        del model_args[at:at + 2]


def test_an_onnx_export_gives_the_torch_models_features(release, tmp_path, capsys):
    """The ONNX path (numpy images through onnxruntime, model_zoo's (x - 127.5) / 127.5) on craft-plugin
    export's .onnx against the torch path ((x / 255 - 0.5) / 0.5) of the same network."""
    from craft_plugin.commands.export import OPSET, export_onnx

    root, _ = release
    export_onnx(save_trained_tiny(tmp_path / "model.pt"), tmp_path / "model.onnx", OPSET)
    args = argv(root, tmp_path / "onnx")
    use_onnx(args, tmp_path / "model.onnx")
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert json.loads(out)["model"]["format"] == "onnx"
    assert run_cli(argv(root, tmp_path / "torch"), capsys)[0] == 0
    a, b = np.load(tmp_path / "onnx" / "ijbc_features.npy"), np.load(tmp_path / "torch" / "ijbc_features.npy")
    assert np.allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max())


def break_release(kind, data, model_args):
    meta = data / "IJBC" / "meta"
    if kind == "missing-images":
        shutil.rmtree(data / "IJBC" / "loose_crop")
        return "loose_crop: missing; the release's face crops live there"
    if kind == "missing-meta":
        (meta / "ijbc_face_tid_mid.txt").unlink()
        return "ijbc_face_tid_mid.txt: missing"
    if kind == "landmark-line":
        lines = (meta / "ijbc_name_5pts_score.txt").read_text().splitlines()
        lines[2] = lines[2].replace(" ", " oops ", 1)
        (meta / "ijbc_name_5pts_score.txt").write_text("\n".join(lines) + "\n")
        return "ijbc_name_5pts_score.txt:3: expected NAME"
    if kind == "unreadable-image":
        (data / "IJBC" / "loose_crop" / "4.jpg").write_bytes(b"not a jpeg")
        return f"{data / 'IJBC' / 'loose_crop' / '4.jpg'}: 10 bytes that are not a decodable image"
    if kind == "unknown-template":
        with open(meta / "ijbc_template_pair_label.txt", "a") as handle:
            handle.write("1 777 0\n")
        return "template 777 has no image"
    if kind == "not-an-embedding":
        torch.save(FeatureMap().state_dict(), data / "model.pt")
        model_args[model_args.index("tiny")] = "featuremap"
        return "not an embedding model"
    if kind == "onnx-input":
        write_onnx(data / "model.onnx", channels=1, size=112)
        use_onnx(model_args, data / "model.onnx")
        return "unsupported input"
    if kind == "onnx-input-size":
        write_onnx(data / "model.onnx", channels=3, size=128)
        use_onnx(model_args, data / "model.onnx")
        return "takes 128x128 inputs; the IJB protocol aligns crops to arcface's 112x112 template"
    if kind == "features-of-other-data":
        features = data / "f.npy"
        np.save(features, np.zeros((3, 2, EMBEDDING_SIZE), np.float32))
        (data / "f.npy.json").write_text(json.dumps({"images": 3, "dim": EMBEDDING_SIZE, "target": "IJBC",
                                                     "meta_sha256": "0", "model": {}}))
        model_args += ["--features", str(features)]
        return "holds features of other data (images 3"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing-images", "missing-meta", "landmark-line", "unreadable-image",
                                  "unknown-template", "not-an-embedding", "onnx-input", "onnx-input-size",
                                  "features-of-other-data"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(release, tmp_path, capsys, kind):
    data = own_copy(release, tmp_path)
    out = tmp_path / "out"
    args = argv(data, out)
    message = break_release(kind, data, args)
    code, stdout, err = run_cli(args, capsys)
    assert code == 2 and stdout == ""
    line = err.rsplit("\r", 1)[-1]                      # what a progress bar cleared from the line
    assert err.count("\n") == 1 and line.startswith("craft-plugin eval: ") and "Traceback" not in err, err
    assert message in err, err
    assert not out.exists()


def test_without_matplotlib_one_line_names_the_extra_before_embedding(release, tmp_path, capsys, monkeypatch):
    import craft_plugin.evaluation.ijb_embed as ijb_embed

    root, _ = release
    monkeypatch.setitem(sys.modules, "matplotlib", None)           # import matplotlib raises ImportError
    monkeypatch.setattr(ijb_embed, "embed_ijb", lambda *a, **k: pytest.fail("embedded without matplotlib"))
    out = tmp_path / "out"
    code, stdout, err = run_cli(argv(root, out), capsys)
    assert code == 2 and stdout == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert "needs matplotlib: pip install 'craft-plugin[eval]'" in err, err
    assert not out.exists()


def test_a_failed_run_leaves_earlier_results_untouched(release, tmp_path, capsys):
    data = own_copy(release, tmp_path)
    out = tmp_path / "out"
    assert run_cli(argv(data, out), capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (data / "IJBC" / "loose_crop" / "7.jpg").write_bytes(b"")
    code, _, err = run_cli(argv(data, out, "--no-flip"), capsys)
    assert code == 2 and "7.jpg" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before     # no .partial file left either


def test_the_human_table_reads_both_rules_and_an_undefined_tpir():
    import io

    from craft_plugin.commands.eval_ijb import _report

    keys = [far_key(f) for f in FAR_TARGETS]
    doc = {"target": "IJBB", "images": 3, "templates": 2, "pairs": 1, "options": {}, "files": {"scores": "/s.npy"},
           "tar_at_far": dict.fromkeys(keys, 0.5), "tar_at_far_strict": dict.fromkeys(keys, 0.25),
           "identification": {"tpir_at_fpir": {"1e-02": None, "1e-01": 0.5}, "rank_1": 1.0, "rank_5": 1.0,
                              "rank_10": 1.0}}
    stream = io.StringIO()
    _report(doc, stream, rescored=True)
    text = stream.getvalue()
    assert "nearest (upstream)" + "    50.00" * 6 in text and "strict FAR<=target" + "    25.00" * 6 in text
    assert "TPIR (%) n/a at FPIR 1e-02, 50.00 at FPIR 1e-01; rank-1 100.00" in text and "rescored" in text
