"""``craft-plugin eval bin``: accuracy, std, XNorm and VAL@FAR=1e-3 of a .bin written here against
a reference written here the way arcface_torch's eval/verification.py computes them (float64
embeddings, sklearn's unshuffled KFold, a loop over the thresholds, and for VAL the degree-1 spline
that scipy's interp1d(kind="slinear") built before SciPy 1.9)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.interpolate import BSpline

from eval_model_helpers import MODULE, face_images, run_cli, run_json, torch_embeddings, trained_tiny, write_bin
from craft_plugin.evaluation.bin_eval import slinear_inverse

PAIRS = 160
BATCH = 7


def reference(net, images, issame, folds=10):
    """verification.py's test() + evaluate(), written out with explicit loops."""
    # in the CLI's batches of BATCH: a float32 forward's last bits depend on the batch's size
    views = [np.concatenate([torch_embeddings(net, view[i:i + BATCH]) for i in range(0, len(view), BATCH)])
             for view in (images, images[:, :, ::-1].copy())]
    xnorm = np.mean([np.linalg.norm(e) for view in views for e in view])
    emb = views[0] + views[1]
    emb = emb / np.sqrt((emb * emb).sum(1, keepdims=True))
    dist = ((emb[0::2] - emb[1::2]) ** 2).sum(1)
    same = np.asarray(issame)
    n = dist.size
    sizes = [n // folds + (1 if k < n % folds else 0) for k in range(folds)]
    starts = np.cumsum([0] + sizes)
    accuracy, val, far = [], [], []
    for k in range(folds):
        test = np.arange(starts[k], starts[k + 1])
        train = np.array([i for i in range(n) if i not in set(test)])

        def acc(t, idx):
            return np.mean((dist[idx] < t) == same[idx])

        thresholds = np.arange(0, 4, 0.01)
        best = thresholds[int(np.argmax([acc(t, train) for t in thresholds]))]
        accuracy.append(acc(best, test))
        fine = np.arange(0, 4, 0.001)
        far_train = np.array([np.sum((dist[train] < t) & ~same[train]) / np.sum(~same[train]) for t in fine])
        if far_train.max() >= 1e-3:
            threshold = float(BSpline(np.r_[far_train[0], far_train, far_train[-1]], fine, 1)(1e-3))
        else:
            threshold = 0.0
        accept = dist[test] < threshold
        val.append(np.sum(accept & same[test]) / np.sum(same[test]))
        far.append(np.sum(accept & ~same[test]) / np.sum(~same[test]))
    return {"accuracy": np.mean(accuracy), "std": np.std(accuracy), "fold_accuracy": accuracy, "xnorm": xnorm,
            "val": np.mean(val), "val_std": np.std(val), "far": np.mean(far)}


@pytest.fixture(scope="module")
def bin_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("bin")
    net = trained_tiny()
    torch.save(net.state_dict(), root / "model.pt")
    images, issame = face_images(PAIRS, seed=1)
    write_bin(root / "lfw.bin", images, issame)
    return root, net, images, issame


def test_bin_numbers_equal_verification_py(bin_set, capsys):
    root, net, images, issame = bin_set
    doc = run_json(["eval", "bin", root / "model.pt", "--data", root, "--targets", "lfw", *MODULE,
                    "--batch-size", str(BATCH)], capsys)
    want = reference(net, images, issame)
    got = doc["targets"]["lfw"]
    assert doc["kind"] == "bin" and doc["model"]["network"] == "tiny" and got["pairs"] == PAIRS
    # the data is made so that the numbers are not degenerate
    assert 0.6 < want["accuracy"] < 0.97 and want["std"] > 0 and 0 < want["val"] < 1
    assert got["fold_accuracy"] == list(want["fold_accuracy"])
    assert got["accuracy"] == want["accuracy"] and got["std"] == want["std"]
    assert got["xnorm"] == pytest.approx(want["xnorm"], rel=1e-12)
    assert got["val_at_far_1e-3"] == pytest.approx(want["val"], abs=1e-12)
    assert got["val_std"] == pytest.approx(want["val_std"], abs=1e-12)
    assert got["far"] == pytest.approx(want["far"], abs=1e-12)


def test_slinear_inverse_is_the_degree_one_spline_on_repeated_values():
    rng = np.random.default_rng(3)
    for _ in range(200):
        x = np.sort(np.round(rng.random(40), 1))   # many repeated values, as FAR(t) has
        x[0] = 0.0
        y = np.arange(40) * 0.001
        # a target between values, or on a repeated one (where the last of the repeats counts)
        at = float(rng.uniform(0, x[-1])) if rng.random() < 0.5 else float(rng.choice(x[:-1]))
        want = float(BSpline(np.r_[x[0], x, x[-1]], y, 1)(at))
        assert slinear_inverse(x, y, at) == pytest.approx(want, abs=1e-15)


def test_missing_target_is_named(bin_set, capsys):
    root, _, _, _ = bin_set
    code, out, err = run_cli(["eval", "bin", root / "model.pt", "--data", root, "--targets", "lfw,cfp_fp",
                              *MODULE, "--json"], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "cfp_fp.bin" in err and "Traceback" not in err


def test_bad_bin_file_is_one_line(bin_set, tmp_path, capsys):
    root, _, _, _ = bin_set
    (tmp_path / "lfw.bin").write_bytes(b"\x80\x04not a pickle")
    code, out, err = run_cli(["eval", "bin", root / "model.pt", "--data", tmp_path, "--targets", "lfw", *MODULE],
                             capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "lfw.bin" in err
