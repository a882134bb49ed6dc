"""``craft-plugin eval compare``: the paired fold interval of .bin sets against a hand computation,
the IJB template bootstrap against the draws redone here pair by pair and reproducible for a seed,
the CRAFT-paper table, and two evaluations of different data refused."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from eval_model_helpers import MODULE, face_images, run_cli, run_json, save_trained_tiny, trained_tiny, write_bin
from craft_plugin.evaluation import roc
from craft_plugin.evaluation.ijb_scoring import verification_report

T_975_9 = 2.262   # Student's t, 0.975 quantile, 9 degrees of freedom (tables give 2.2622)


def bin_doc(path, folds_by_set, pairs=600, sha="0" * 64):
    doc = {"kind": "bin", "model": {"format": "torch"}, "targets": {
        name: {"accuracy": float(np.mean(f)), "std": float(np.std(f)), "xnorm": 20.0, "pairs": pairs,
               "fold_accuracy": list(f), "folds": len(f), "sha256": sha} for name, f in folds_by_set.items()}}
    path.write_text(json.dumps(doc))
    return str(path)


FOLDS_A = {"lfw": [0.99, 0.995, 0.99, 0.985, 1.0, 0.99, 0.995, 0.99, 0.985, 0.99],
           "cfp_fp": [0.90, 0.92, 0.91, 0.93, 0.90, 0.91, 0.92, 0.90, 0.91, 0.92]}
FOLDS_B = {"lfw": [0.995, 0.99, 0.995, 0.99, 0.995, 0.995, 0.99, 0.995, 0.99, 0.995],
           "cfp_fp": [0.93, 0.94, 0.93, 0.95, 0.92, 0.94, 0.94, 0.92, 0.93, 0.95]}


def hand_interval(a, b):
    d = [y - x for x, y in zip(a, b)]
    mean = sum(d) / 10
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / 9)
    return mean, mean - T_975_9 * sd / math.sqrt(10), mean + T_975_9 * sd / math.sqrt(10)


def test_bin_intervals_are_the_paired_t_interval_over_the_folds(tmp_path, capsys):
    a = bin_doc(tmp_path / "a.json", FOLDS_A)
    b = bin_doc(tmp_path / "b.json", FOLDS_B)
    code, out, err = run_cli(["eval", "compare", a, b, "--labels", "baseline,CRAFT", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    for name in FOLDS_A:
        mean, low, high = hand_interval(FOLDS_A[name], FOLDS_B[name])
        got = doc["sets"][name]
        assert got["difference"] == pytest.approx(mean, abs=1e-12)
        assert got["low"] == pytest.approx(low, abs=1e-12) and got["high"] == pytest.approx(high, abs=1e-12)
        assert got["excludes_zero"] == (low > 0 or high < 0)
    assert doc["sets"]["cfp_fp"]["excludes_zero"] and not doc["sets"]["lfw"]["excludes_zero"]
    assert "cfp_fp: CRAFT - baseline = +2.30 points" in err and "excludes zero: CRAFT is better" in err
    assert "lfw: CRAFT - baseline" in err and "includes zero" in err
    lines = doc["markdown"].splitlines()
    assert lines[0] == "| Method | LFW | CFP-FP | AgeDB-30 | CALFW | CPLFW | IJB-B (TAR@FAR=1e-4) | IJB-C (TAR@FAR=1e-4) |"
    assert lines[2].startswith("| baseline | 99.10 | 91.20 | - | - | - | - | - |")
    mean, low, high = hand_interval(FOLDS_A["cfp_fp"], FOLDS_B["cfp_fp"])
    assert f"{100 * mean:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]" in lines[4]


def ijb_files(tmp_path, name, scores, p1, p2, labels, target="IJBC"):
    np.save(tmp_path / f"{name}_scores.npy", scores)
    np.savez(tmp_path / f"{name}_pairs.npz", p1=p1, p2=p2, labels=labels)
    report = verification_report(scores, labels)
    doc = {"kind": "ijb", "target": target, "model": {"format": "torch"}, "pairs": int(scores.size),
           "templates": int(np.unique(np.r_[p1, p2]).size), "images": 1000,
           "tar_at_far": report["tar_at_far"], "tar_at_far_strict": report["tar_at_far_strict"],
           "files": {"scores": str(tmp_path / f"{name}_scores.npy"), "pairs": str(tmp_path / f"{name}_pairs.npz")}}
    (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    return str(tmp_path / f"{name}.json")


@pytest.fixture
def ijb_pair(tmp_path):
    """60 templates of 20 identities, every pair of them scored by two 'models' (B separates better)."""
    rng = np.random.default_rng(7)
    identity = np.repeat(np.arange(20), 3)
    ids = 1000 + np.arange(60) * 7                      # template ids need not be 0..T-1
    i, j = np.triu_indices(60, 1)
    labels = (identity[i] == identity[j]).astype(np.int8)
    noise = rng.normal(0, 1, i.size)
    scores_a = (labels * 1.5 + noise).astype(np.float32)
    scores_b = (labels * 2.0 + noise + rng.normal(0, 0.3, i.size)).astype(np.float32)
    a = ijb_files(tmp_path, "a", scores_a, ids[i], ids[j], labels)
    b = ijb_files(tmp_path, "b", scores_b, ids[i], ids[j], labels)
    return tmp_path, a, b, (scores_a, scores_b, ids[i], ids[j], labels)


def tar_by_expansion(scores, labels, p1, p2, draws):
    """TAR at FAR 1e-4 (nearest rule) of the pair list rebuilt pair by pair: pair k appears
    m(t1) m(t2) times."""
    keep = [k for k in range(scores.size) for _ in range(draws[p1[k]] * draws[p2[k]])]
    fpr, tpr, _ = roc.roc_curve(labels[keep], scores[keep])
    return tpr[roc.operating_point(fpr, tpr, 1e-4, "nearest")]


def test_ijb_bootstrap_resamples_templates_and_is_reproducible(ijb_pair, capsys):
    _, a, b, (scores_a, scores_b, p1, p2, labels) = ijb_pair
    argv = ["eval", "compare", a, b, "--seed", "5", "--resamples", "20"]
    doc = run_json(argv, capsys)
    got = doc["sets"]["IJBC"]
    assert doc["bootstrap"] == {"seed": 5, "resamples": 20, "unit": "templates"}
    assert "20 resamples, seed 5" in got["sentence"] and "20 resamples, seed 5" in got["method"]
    # the draws redone here: T templates drawn T times with replacement from default_rng(seed)
    templates = np.unique(np.r_[p1, p2])
    rng = np.random.default_rng(5)
    diffs = []
    for _ in range(20):
        picked = templates[rng.integers(0, templates.size, templates.size)]
        draws = {t: int(np.sum(picked == t)) for t in templates}
        diffs.append(tar_by_expansion(scores_b, labels, p1, p2, draws) - tar_by_expansion(scores_a, labels, p1, p2, draws))
    assert np.std(diffs) > 0
    assert got["low"] == pytest.approx(np.percentile(diffs, 2.5), abs=1e-12)
    assert got["high"] == pytest.approx(np.percentile(diffs, 97.5), abs=1e-12)
    key = roc.far_key(1e-4)
    assert got["difference"] == pytest.approx(verification_report(scores_b, labels)["tar_at_far"][key]
                                              - verification_report(scores_a, labels)["tar_at_far"][key])
    assert run_json(argv, capsys)["sets"] == doc["sets"]                      # same seed, same interval
    other = run_json(["eval", "compare", a, b, "--seed", "6", "--resamples", "20"], capsys)["sets"]["IJBC"]
    assert (other["low"], other["high"]) != (got["low"], got["high"])
    assert doc["markdown"].splitlines()[2].endswith(f"| {100 * got['a']:.2f} |")  # IJB-C, last column


def refused(argv, capsys, *needles):
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_different_data_is_refused(ijb_pair, capsys):
    tmp, a, b, (scores_a, scores_b, p1, p2, labels) = ijb_pair
    bins_a = bin_doc(tmp / "ba.json", FOLDS_A)
    refused(["eval", "compare", bins_a, bin_doc(tmp / "bb.json", FOLDS_B, pairs=700)], capsys, "pairs 600 vs 700")
    refused(["eval", "compare", bins_a, bin_doc(tmp / "bc.json", FOLDS_B, sha="1" * 64)], capsys, "sha256")
    refused(["eval", "compare", bins_a, bin_doc(tmp / "bd.json", {"lfw": FOLDS_B["lfw"]})], capsys,
            "different sets")
    refused(["eval", "compare", f"{bins_a},{a}", bins_a], capsys, "different sets")
    flipped = labels.copy()
    flipped[:3] = 1 - flipped[:3]
    other = ijb_files(tmp, "c", scores_b, p1, p2, flipped)
    refused(["eval", "compare", a, other], capsys, "IJBC", "pair lists")
    refused(["eval", "compare", a, ijb_files(tmp, "d", scores_b[:-1], p1[:-1], p2[:-1], labels[:-1])], capsys,
            "1770 vs 1769 pairs")
    np.save(tmp / "b_scores.npy", scores_a)   # b.json's scores file replaced by another evaluation's
    refused(["eval", "compare", a, b], capsys, "b.json", "not this evaluation's")
    (tmp / "junk.json").write_text('{"kind": "demo"}')
    refused(["eval", "compare", a, str(tmp / "junk.json")], capsys, "junk.json", "\"kind\"")


def test_eval_bin_documents_compare_end_to_end(tmp_path, capsys):
    write_bin(tmp_path / "lfw.bin", *face_images(40, seed=9, blur=60))
    docs = []
    for seed in (0, 1):
        torch.save(trained_tiny(seed=seed).state_dict(), tmp_path / f"m{seed}.pt")
        code, out, err = run_cli(["eval", "bin", tmp_path / f"m{seed}.pt", "--data", tmp_path, "--targets", "lfw",
                                  *MODULE, "--json"], capsys)
        assert code == 0, err
        (tmp_path / f"m{seed}.json").write_text(out)
        docs.append(json.loads(out)["targets"]["lfw"]["fold_accuracy"])
    got = run_json(["eval", "compare", tmp_path / "m0.json", tmp_path / "m1.json"], capsys)["sets"]["lfw"]
    mean, low, high = hand_interval(*docs)
    assert (got["difference"], got["low"], got["high"]) == pytest.approx((mean, low, high), abs=1e-12)


def test_eval_ijb_documents_compare_end_to_end(tmp_path, capsys):
    """The documents and files `eval ijb --out` writes are what compare reads (a small synthetic set)."""
    from craft_plugin.evaluation.synthetic import write_synthetic_ijb

    write_synthetic_ijb(tmp_path / "IJBB", "IJBB", one_to_n=False)
    results = []
    for seed in (0, 1):
        save_trained_tiny(tmp_path / f"m{seed}.pt", seed=seed)
        run_json(["eval", "ijb", tmp_path / f"m{seed}.pt", "--ijb", tmp_path / "IJBB", "--target", "IJBB",
                  *MODULE, "--workers", "0", "--device", "cpu", "--out", tmp_path / f"out{seed}"], capsys)
        results.append(tmp_path / f"out{seed}" / "ijbb_results.json")
    doc = run_json(["eval", "compare", *results, "--resamples", "10"], capsys)
    got = doc["sets"]["IJBB"]
    a, b = (json.loads(r.read_text())["tar_at_far"]["1e-04"] for r in results)
    assert (got["a"], got["b"]) == (a, b) and got["difference"] == pytest.approx(b - a)
    assert got["low"] <= got["high"] and doc["markdown"].splitlines()[2].split(" | ")[6] == f"{100 * a:.2f}"


@pytest.mark.parametrize("far", [1e-4, 1e-3, 1e-2])
def test_ranked_pairs_give_roc_curve_on_the_repeated_pairs(far):
    """The prefix computation of the bootstrap equals roc_curve on the pairs repeated by their
    counts, with tied scores, counts of 0 and runs that count nothing."""
    from craft_plugin.evaluation.compare import RankedPairs, tar_at

    rng = np.random.default_rng(int(far * 1e4))
    fast_paths = 0
    for case in range(40):
        n = int(rng.integers(2000, 30000))
        labels = (rng.random(n) < rng.uniform(0.01, 0.3)).astype(np.int8)
        scores = np.round(labels * rng.uniform(0.2, 2) + rng.normal(0, 1, n), int(rng.integers(1, 4)))
        ranked = RankedPairs(scores, labels, far, min_prefix=64)
        counts = rng.poisson(rng.uniform(0.3, 2), n) * rng.integers(0, 2, n) if case % 2 else rng.poisson(1, n)
        genuine = int(counts[labels == 1].sum())
        fast_paths += ranked.prefix < n
        assert ranked.tar(counts, genuine, int(counts.sum()) - genuine) == tar_at(scores, labels, counts, far)
    assert fast_paths > 20
