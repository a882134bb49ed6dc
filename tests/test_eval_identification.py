"""1:N identification on hand-built galleries whose every score is chosen, with the expected figures
worked out by hand in the comments; and the 1:N list reader's errors."""
import numpy as np
import pytest

from craft_plugin.cli import UsageError
from craft_plugin.evaluation import identification
from craft_plugin.evaluation.identification import OneToNLists, TemplateList, read_1n_lists, search_gallery
from craft_plugin.evaluation.synthetic import write_synthetic_ijb


def probe_features(score_rows, dim):
    """Unit vectors whose dot with basis vector j is score_rows[i][j] (last axis takes the rest)."""
    rows = np.zeros((len(score_rows), dim))
    for i, scores in enumerate(score_rows):
        rows[i, :len(scores)] = scores
        rows[i, -1] = np.sqrt(1.0 - np.sum(np.square(scores)))
    return rows


# gallery templates are basis vectors: G1 = subjects 1..4 (templates 101..104 = e0..e3),
# G2 = subjects 5, 6 (templates 105, 106 = e4, e5). Probe templates 201..206, scores against e0..e5:
PROBES = [  # (subject, scores)
    (1, [0.9, 0.1, 0.0, 0.0, 0.2, 0.1]),   # G1 mated, rank 1;    G2 non-mated, best 0.2
    (1, [0.3, 0.5, 0.0, 0.0, 0.1, 0.0]),   # G1 mated, rank 2;    G2 non-mated, best 0.1
    (2, [0.0, 0.8, 0.1, 0.0, 0.0, 0.3]),   # G1 mated, rank 1;    G2 non-mated, best 0.3
    (5, [0.1, 0.2, 0.0, 0.0, 0.7, 0.6]),   # G1 non-mated 0.2;    G2 mated, rank 1
    (6, [0.0, 0.0, 0.4, 0.0, 0.5, 0.45]),  # G1 non-mated 0.4;    G2 mated, rank 2
    (7, [0.6, 0.0, 0.0, 0.0, 0.0, 0.35]),  # in no gallery: non-mated in both (0.6 and 0.35)
]


def hand_built():
    dim = 7
    gallery = np.eye(dim)[:6]
    feats = np.vstack([gallery, probe_features([s for _, s in PROBES], dim)])
    template_ids = np.r_[101:107, 201:207]
    lists = OneToNLists(
        galleries={"G1": TemplateList("g1.csv", np.array([101, 102, 103, 104]), np.array([1, 2, 3, 4])),
                   "G2": TemplateList("g2.csv", np.array([105, 106]), np.array([5, 6]))},
        probes=TemplateList("probe.csv", np.arange(201, 207), np.array([s for s, _ in PROBES])))
    return template_ids, feats, lists


def test_hand_built_galleries():
    report = identification.identification_report(*hand_built())
    g1, g2 = report["galleries"]["G1"], report["galleries"]["G2"]
    # G1: mated probes 1-3 (ranks 1, 2, 1); non-mated best scores 0.2, 0.4, 0.6 (n = 3), so at FPIR
    # 0.01 and 0.1 no false alarm is allowed (floor(0.03) = floor(0.3) = 0): threshold 0.6; identified:
    # rank 1 and score > 0.6: probes 1 (0.9) and 3 (0.8): TPIR 2/3.
    assert (g1["mated"], g1["non_mated"]) == (3, 3)
    assert g1["tpir_at_fpir"] == {"1e-02": pytest.approx(2 / 3), "1e-01": pytest.approx(2 / 3)}
    assert g1["thresholds"]["1e-02"] == pytest.approx(0.6)
    assert (g1["rank_1"], g1["rank_5"], g1["rank_10"]) == (pytest.approx(2 / 3), 1.0, 1.0)
    # G2: mated probes 4 (0.7 vs 0.6: rank 1) and 5 (0.45 vs 0.5: rank 2); non-mated best 0.2, 0.1,
    # 0.3, 0.35: threshold 0.35; identified: probe 4: TPIR 1/2.
    assert (g2["mated"], g2["non_mated"]) == (2, 4)
    assert g2["tpir_at_fpir"] == {"1e-02": 0.5, "1e-01": 0.5}
    assert (g2["rank_1"], g2["rank_5"]) == (0.5, 1.0)
    # combined: TPIR the mean of the galleries (2/3 + 1/2) / 2 = 7/12; rank-1 over the 5 mated
    # searches: (2 + 1) / 5
    assert report["tpir_at_fpir"] == {"1e-02": pytest.approx(7 / 12), "1e-01": pytest.approx(7 / 12)}
    assert report["rank_1"] == pytest.approx(3 / 5) and report["rank_5"] == 1.0 and report["mated"] == 5


def test_the_fpir_budget_and_the_strict_threshold():
    # one gallery template; 20 non-mated probes with best scores 0.02, 0.04, ..., 0.40; mated probes
    # scoring 0.38 and 0.36. FPIR 0.01: floor(0.2) = 0 alarms allowed: threshold 0.40, none identified.
    # FPIR 0.1: floor(2.0) = 2 alarms (0.40, 0.38): threshold = the 3rd best, 0.36; 0.38 > 0.36 is
    # identified, 0.36 is not (an alarm needs a score above the threshold): TPIR 1/2.
    non_mated = [[0.02 * k] for k in range(1, 21)]
    feats = probe_features([[0.38], [0.36]] + non_mated, 2)
    subjects = np.r_[1, 1, np.arange(100, 120)]
    out = search_gallery(feats, subjects, np.eye(2)[:1], np.array([1]))
    assert (out["mated"], out["non_mated"]) == (2, 20)
    assert out["tpir_at_fpir"] == {"1e-02": 0.0, "1e-01": 0.5}
    assert out["thresholds"]["1e-01"] == pytest.approx(0.36)
    assert out["rank_1"] == 1.0


def test_ties_with_the_mate_count_for_the_probe():
    # the mate and another subject both score 0.5: rank 1
    feats = probe_features([[0.5, 0.5]], 3)
    out = search_gallery(feats, np.array([1]), np.eye(3)[:2], np.array([1, 2]))
    assert out["rank_1"] == 1.0 and out["non_mated"] == 0 and out["tpir_at_fpir"]["1e-02"] is None


# ---------------------------------------------------------------- the release's files
def test_synthetic_release_lists_are_read(tmp_path):
    counts = write_synthetic_ijb(tmp_path, "IJBC", identities=6)
    lists = read_1n_lists(tmp_path, "IJBC")
    assert sorted(lists.galleries) == ["G1", "G2"]
    gallery = np.r_[lists.galleries["G1"].templates, lists.galleries["G2"].templates]
    assert gallery.size == 6 and lists.probes.templates.size == counts["templates"] - 6
    assert not np.intersect1d(lists.galleries["G1"].subjects, lists.galleries["G2"].subjects).size


def test_no_1n_files_means_none(tmp_path):
    write_synthetic_ijb(tmp_path, "IJBB", identities=4, one_to_n=False)
    assert read_1n_lists(tmp_path, "IJBB") is None


def test_ijbb_uses_the_s1_s2_names(tmp_path):
    write_synthetic_ijb(tmp_path, "IJBB", identities=4)
    assert sorted(read_1n_lists(tmp_path, "IJBB").galleries) == ["S1", "S2"]


def _rewrite(path, transform):
    lines = path.read_text().splitlines()
    path.write_text("\n".join(transform(lines)) + "\n")


def test_bad_lists_are_named(tmp_path):
    write_synthetic_ijb(tmp_path, "IJBC", identities=6)
    meta = tmp_path / "meta"
    g1, probes = meta / "ijbc_1N_gallery_G1.csv", meta / "ijbc_1N_probe_mixed.csv"
    original = probes.read_text()

    _rewrite(probes, lambda lines: [lines[0], "x,1,a.jpg"] + lines[1:])
    with pytest.raises(UsageError, match=r"ijbc_1N_probe_mixed.csv:2: expected TEMPLATE_ID,SUBJECT_ID as integers"):
        read_1n_lists(tmp_path, "IJBC")
    probes.write_text(original)

    _rewrite(probes, lambda lines: ["FILENAME,TEMPLATE_ID"] + lines[1:])
    with pytest.raises(UsageError, match=r"ijbc_1N_probe_mixed.csv:1: expected a header"):
        read_1n_lists(tmp_path, "IJBC")
    probes.write_text(original)

    first = original.splitlines()[1].split(",")
    _rewrite(probes, lambda lines: lines + [f"{first[0]},{int(first[1]) + 1},x.jpg"])
    with pytest.raises(UsageError, match=rf"template {first[0]} has subject {int(first[1]) + 1}, but subject {first[1]} at line 2"):
        read_1n_lists(tmp_path, "IJBC")
    probes.write_text(original)

    g1_row = g1.read_text().splitlines()[1].split(",")
    _rewrite(g1, lambda lines: lines + [f"999,{g1_row[1]},y.jpg"])
    with pytest.raises(UsageError, match=rf"subject {g1_row[1]} has 2 gallery templates"):
        read_1n_lists(tmp_path, "IJBC")

    g1.unlink()
    with pytest.raises(UsageError, match=r"ijbc_1N_gallery_G1.csv: missing"):
        read_1n_lists(tmp_path, "IJBC")


def test_a_listed_template_without_images_is_refused():
    template_ids, feats, lists = hand_built()
    lists = OneToNLists(galleries=lists.galleries,
                        probes=TemplateList("probe.csv", np.array([201, 299]), np.array([1, 2])))
    with pytest.raises(UsageError, match="probe.csv: template 299 has no image"):
        identification.identification_report(template_ids, feats, lists)


def test_galleries_must_hold_disjoint_subjects(tmp_path):
    write_synthetic_ijb(tmp_path, "IJBC", identities=6)
    meta = tmp_path / "meta"
    g1_row = (meta / "ijbc_1N_gallery_G1.csv").read_text().splitlines()[1].split(",")
    _rewrite(meta / "ijbc_1N_gallery_G2.csv", lambda lines: lines + [f"999,{g1_row[1]},z.jpg"])
    with pytest.raises(UsageError, match=rf"ijbc_1N_gallery_G2.csv: subject {g1_row[1]} is also in ijbc_1N_gallery_G1.csv"):
        read_1n_lists(tmp_path, "IJBC")
