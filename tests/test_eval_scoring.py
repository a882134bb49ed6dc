"""IJB 1:1 scoring against references written here: upstream eval_ijbc.py's steps restated loop by
loop (image features, image2template_feature, the pair loop), a brute-force ROC with sklearn's
drop_intermediate rule, and both TAR rules as upstream and the strict definition state them."""
import tracemalloc

import numpy as np
import pytest

from craft_plugin.cli import UsageError
from craft_plugin.evaluation import ijb_scoring, roc
from craft_plugin.evaluation.ijb_meta import read_ijb
from craft_plugin.evaluation.synthetic import write_synthetic_ijb

FARS = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
KEYS = ["1e-06", "1e-05", "1e-04", "1e-03", "1e-02", "1e-01"]


# ---------------------------------------------------------------- references (written from upstream's text)
def ref_image_features(raw, faceness, flip, norm_score, detector_score):
    img_feats = raw.reshape(raw.shape[0], -1)  # upstream's (N, 2D) rows: [image | flip]
    half = img_feats.shape[1] // 2
    x = img_feats[:, :half] + img_feats[:, half:] if flip else img_feats[:, :half]
    if not norm_score:
        x = x / np.sqrt(np.sum(x ** 2, -1, keepdims=True))
    if detector_score:
        x = x * faceness[:, np.newaxis]
    return x


def ref_template_features(img_feats, templates, medias):
    unique_templates = np.unique(templates)
    template_feats = np.zeros((len(unique_templates), img_feats.shape[1]))
    for count, uqt in enumerate(unique_templates):
        (ind_t,) = np.where(templates == uqt)
        face_feats, face_medias = img_feats[ind_t], medias[ind_t]
        unique_medias, counts = np.unique(face_medias, return_counts=True)
        media_feats = []
        for u, ct in zip(unique_medias, counts):
            (ind_m,) = np.where(face_medias == u)
            media_feats += [face_feats[ind_m]] if ct == 1 else [np.mean(face_feats[ind_m], axis=0, keepdims=True)]
        template_feats[count] = np.sum(np.array(media_feats), axis=0)
    norms = np.sqrt(np.einsum("ij,ij->i", template_feats, template_feats))  # sklearn's row_norms
    return unique_templates, template_feats / norms[:, np.newaxis]


def ref_pair_scores(unique_templates, feats, p1, p2):
    template2id = {int(t): i for i, t in enumerate(unique_templates)}
    a = feats[[template2id[int(t)] for t in p1]]
    b = feats[[template2id[int(t)] for t in p2]]
    return np.sum(a * b, -1)


def ref_roc(labels, scores):
    """Brute force: one point per distinct score (accept score >= s), highest first; then drop each
    interior point whose FP and TP counts both have a zero second difference; prepend (0, 0)."""
    labels = np.asarray(labels) == 1
    points = [(np.count_nonzero(~labels & (scores >= s)), np.count_nonzero(labels & (scores >= s)), s)
              for s in sorted(set(scores.tolist()), reverse=True)]
    if len(points) > 2:
        kept = [points[0]]
        for prev, cur, nxt in zip(points, points[1:], points[2:]):
            if (nxt[0] - 2 * cur[0] + prev[0]) != 0 or (nxt[1] - 2 * cur[1] + prev[1]) != 0:
                kept.append(cur)
        points = kept + [points[-1]]
    fp = np.array([0] + [p[0] for p in points], float)
    tp = np.array([0] + [p[1] for p in points], float)
    th = np.array([np.inf] + [p[2] for p in points])
    return fp / fp[-1], tp / tp[-1], th


def ref_nearest(fpr, tpr, far):
    """upstream eval_ijbc.py: flip the curve, then min over (|fpr - far|, index) tuples."""
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    _, i = min(zip(abs(fpr - far), range(len(fpr))))
    return tpr[i]


def ref_strict(fpr, tpr, far):
    return max(t for f, t in zip(fpr, tpr) if f <= far)


# ---------------------------------------------------------------- image and template features
@pytest.mark.parametrize("flip", [True, False])
@pytest.mark.parametrize("norm_score", [True, False])
@pytest.mark.parametrize("detector_score", [True, False])
def test_image_features_are_upstreams(flip, norm_score, detector_score):
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((50, 2, 8)).astype(np.float32)
    faceness = rng.uniform(0.5, 1.0, 50).astype(np.float32)
    ours = ijb_scoring.image_features(raw, faceness, flip, norm_score, detector_score)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, ref_image_features(raw, faceness, flip, norm_score, detector_score))


def test_template_features_equal_upstreams_aggregation_bit_for_bit():
    rng = np.random.default_rng(1)
    n = 3000
    templates = rng.integers(0, 150, n) * 7 + 3  # sparse, unsorted ids, images in random order
    medias = rng.integers(0, 12, n)               # media ids shared across templates, as in IJB
    feats = rng.standard_normal((n, 16)).astype(np.float32) * rng.uniform(0.1, 10, (n, 1)).astype(np.float32)
    ids, ours = ijb_scoring.template_features(feats, templates, medias)
    ref_ids, ref = ref_template_features(feats, templates, medias)
    np.testing.assert_array_equal(ids, ref_ids)
    # float32 mean and sum in upstream's order: a different summation order (np.add.reduceat)
    # moves these by ~1e-8; the float64 normalisation then agrees to rounding
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-15)


def test_template_features_in_small_image_chunks_are_the_same(monkeypatch):
    rng = np.random.default_rng(2)
    templates = np.repeat(np.arange(40), 25)
    medias = np.repeat(np.arange(200), 5)  # 5-frame videos, 5 per template
    feats = rng.standard_normal((1000, 8)).astype(np.float32)
    whole = ijb_scoring.template_features(feats, templates, medias)[1]
    monkeypatch.setattr(ijb_scoring, "IMAGE_CHUNK", 7)  # smaller than one media: one media per step
    np.testing.assert_array_equal(ijb_scoring.template_features(feats, templates, medias)[1], whole)


# ---------------------------------------------------------------- pair scores
def _templates(t=300, d=32, seed=3):
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((t, d))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    ids = np.sort(rng.choice(10 * t, t, replace=False))
    return ids, feats, rng


@pytest.mark.parametrize("layout", ["random", "gallery_by_probe", "grouped_unsorted", "one_heavy_row"])
def test_pair_scores_are_the_cosines_in_pair_order(layout, monkeypatch):
    ids, feats, rng = _templates()
    if layout == "random":          # no structure: the row-by-row path
        p1, p2 = rng.choice(ids, 20000), rng.choice(ids, 20000)
    elif layout in ("gallery_by_probe", "grouped_unsorted"):  # IJB-C-like: the GEMM path
        gallery = ids[:20] if layout == "gallery_by_probe" else rng.permutation(ids)[:20]
        p1 = np.repeat(gallery, 250)  # grouped by first template, in id order or not
        p2 = np.concatenate([rng.choice(np.setdiff1d(ids, gallery), 250, replace=False) for _ in range(20)])
        if layout == "gallery_by_probe":
            order = rng.permutation(p1.size)  # shuffled, so the chunk is sorted first
            p1, p2 = p1[order], p2[order]
    else:
        p1 = np.r_[np.full(5000, ids[0]), rng.choice(ids, 3000)]
        p2 = rng.choice(ids, p1.size)
        monkeypatch.setattr(ijb_scoring, "GATHER_ROWS", 100)
    ours = ijb_scoring.pair_scores(ids, feats, p1, p2, chunk=3000)
    assert ours.dtype == np.float64 and ours.shape == p1.shape
    np.testing.assert_allclose(ours, ref_pair_scores(ids, feats, p1, p2), rtol=0, atol=1e-14)


def test_the_gemm_and_row_by_row_paths_agree(monkeypatch):
    ids, feats, rng = _templates()
    p1, p2 = np.repeat(ids[:10], 200), np.tile(ids[100:300], 10)
    monkeypatch.setattr(ijb_scoring, "DENSE_PER_PAIR", 0)  # never dense: all row by row
    row_by_row = ijb_scoring.pair_scores(ids, feats, p1, p2)
    monkeypatch.setattr(ijb_scoring, "DENSE_PER_PAIR", 10 ** 9)  # always dense
    dense = ijb_scoring.pair_scores(ids, feats, p1, p2)
    np.testing.assert_allclose(row_by_row, dense, rtol=0, atol=1e-14)
    np.testing.assert_allclose(dense, ref_pair_scores(ids, feats, p1, p2), rtol=0, atol=1e-14)


def test_a_pair_naming_an_unknown_template_is_refused():
    ids, feats, _ = _templates(t=10)
    missing = int(ids.max()) + 1
    with pytest.raises(UsageError, match=f"pair 3 .*template {missing}, which has no image"):
        ijb_scoring.pair_scores(ids, feats, ids[:5], np.r_[ids[:3], missing, ids[4]])


def test_scoring_memory_does_not_grow_with_the_pair_count():
    ids, feats, rng = _templates(t=200, d=16)

    def extra_peak(n):
        p1, p2 = rng.choice(ids, n), rng.choice(ids, n)
        tracemalloc.start()
        ijb_scoring.pair_scores(ids, feats, p1, p2, chunk=5000)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak - 8 * n  # what it holds besides the (n,) float64 result

    small, large = extra_peak(20_000), extra_peak(200_000)
    assert large < 1.1 * small + 65536, (small, large)


# ---------------------------------------------------------------- ROC and the two TAR rules
def test_roc_curve_matches_the_brute_force_definition():
    rng = np.random.default_rng(4)
    for _ in range(60):
        n = int(rng.integers(3, 200))
        labels = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(np.int8)
        labels[:2] = [0, 1]
        scores = np.round(rng.standard_normal(n) + labels, int(rng.integers(0, 3)))  # many ties
        for ours, ref in zip(roc.roc_curve(labels, scores), ref_roc(labels, scores)):
            np.testing.assert_array_equal(ours, ref)


def test_roc_curve_matches_sklearn_when_installed():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    labels = (rng.random(5000) < 0.1).astype(int)
    scores = np.round(rng.standard_normal(5000) + 2 * labels, 2)
    for ours, theirs in zip(roc.roc_curve(labels, scores), metrics.roc_curve(labels, scores)):
        np.testing.assert_array_equal(ours, theirs)


def test_drop_intermediate_moves_the_nearest_tar_at_1e2():
    # 200 impostors (an FPR step of 0.005), 10 genuine. Four thresholds each accept one genuine and
    # one impostor: points (FP, TP) = (1,1) (2,2) (3,3) (4,4) lie on one line, so sklearn keeps only
    # (1,1) and (4,4). Without dropping, FPR 0.01 is the point (2,2): TAR 0.2; with it the nearest
    # point is (1,1) at FPR 0.005 (0.005 away; (4,4) is 0.01 away): TAR 0.1.
    scores = np.r_[[0.9, 0.8, 0.7, 0.6] * 2, np.full(6, 0.1), np.linspace(0.5, 0.2, 196)]
    labels = np.r_[np.ones(4), np.zeros(4), np.ones(6), np.zeros(196)].astype(int)
    fpr, tpr, _ = roc.roc_curve(labels, scores)
    assert 0.01 not in fpr.tolist()  # the point at FPR 0.01 was dropped
    report = ijb_scoring.verification_report(scores, labels)
    assert report["tar_at_far"]["1e-02"] == pytest.approx(0.1)
    assert report["tar_at_far_strict"]["1e-02"] == pytest.approx(0.1)
    # what the rule would give on the undropped curve
    fp_all = np.array([0, 1, 2, 3, 4]) / 200
    tp_all = np.array([0, 1, 2, 3, 4]) / 10
    assert ref_nearest(fp_all, tp_all, 0.01) == pytest.approx(0.2)


def test_nearest_and_strict_rules_differ():
    # 7 impostors (FPR step 1/7 ~ 0.143), 2 genuine: scores G .9, I .8, G .7, then impostors.
    # At FAR 0.1 the nearest point has FPR 1/7 > 0.1 (0.043 away, FPR 0 is 0.1 away); of its two
    # points (1,1) and (1,2) upstream takes the larger TPR: 1.0. Strict: FPR 0 only: TAR 0.5.
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    labels = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0])
    report = ijb_scoring.verification_report(scores, labels)
    assert report["tar_at_far"]["1e-01"] == 1.0
    assert report["tar_at_far_strict"]["1e-01"] == 0.5
    assert report["operating_points"]["nearest"]["1e-01"]["far"] == pytest.approx(1 / 7)
    assert report["operating_points"]["strict"]["1e-01"] == {"tar": 0.5, "far": 0.0, "threshold": 0.9}
    fpr, tpr, _ = ref_roc(labels, scores)
    assert ref_nearest(fpr, tpr, 0.1) == 1.0 and ref_strict(fpr, tpr, 0.1) == 0.5


def test_tar_by_both_rules_equals_the_references_on_random_scores():
    rng = np.random.default_rng(6)
    for _ in range(20):
        n = int(rng.integers(50, 3000))
        labels = (rng.random(n) < 0.2).astype(int)
        labels[:2] = [0, 1]
        scores = np.round(rng.standard_normal(n) + 1.5 * labels, int(rng.integers(1, 4)))
        report = ijb_scoring.verification_report(scores, labels)
        assert list(report["tar_at_far"]) == KEYS and list(report["tar_at_far_strict"]) == KEYS
        fpr, tpr, _ = ref_roc(labels, scores)
        for key, far in zip(KEYS, FARS):
            assert report["tar_at_far"][key] == ref_nearest(fpr, tpr, far)
            assert report["tar_at_far_strict"][key] == ref_strict(fpr, tpr, far)
            assert 0.0 <= report["tar_at_far_strict"][key] <= 1.0
        assert report["genuine"] == labels.sum() and report["impostor"] == n - labels.sum()


def test_a_pair_list_without_impostors_is_refused():
    with pytest.raises(UsageError, match="3 genuine .* 0 impostor"):
        ijb_scoring.verification_report(np.array([0.1, 0.2, 0.3]), np.array([1, 1, 1]))


# ---------------------------------------------------------------- the whole 1:1 path on a synthetic release
@pytest.mark.parametrize("flip,norm_score,detector_score", [(True, True, True), (False, False, True),
                                                            (True, False, False)])
def test_run_scoring_equals_upstreams_steps(tmp_path, flip, norm_score, detector_score):
    write_synthetic_ijb(tmp_path, "IJBC", identities=6, templates_per_identity=3, max_frames=3, seed=7)
    meta = read_ijb(tmp_path, "IJBC")
    rng = np.random.default_rng(8)
    raw = rng.standard_normal((meta.templates.size, 2, 24)).astype(np.float32)
    result = ijb_scoring.run_scoring(meta, raw, flip, norm_score, detector_score)

    x = ref_image_features(raw, meta.faceness, flip, norm_score, detector_score)
    ids, feats = ref_template_features(x, meta.templates, meta.medias)
    scores = ref_pair_scores(ids, feats, meta.p1, meta.p2)
    np.testing.assert_allclose(result["scores"], scores, rtol=0, atol=1e-14)
    fpr, tpr, _ = ref_roc(meta.labels, scores)
    for key, far in zip(KEYS, FARS):
        assert result["tar_at_far"][key] == ref_nearest(fpr, tpr, far)
        assert result["tar_at_far_strict"][key] == ref_strict(fpr, tpr, far)
    assert (result["images"], result["templates"], result["pairs"]) == (meta.templates.size, ids.size, meta.p1.size)
    assert result["options"] == {"flip": flip, "norm_score": norm_score, "detector_score": detector_score}
    assert result["identification"] is not None and result["target"] == "IJBC"


def test_the_roc_plot_is_a_png_written_atomically(tmp_path):
    pytest.importorskip("matplotlib")
    from craft_plugin.evaluation.roc_plot import write_roc_plot

    rng = np.random.default_rng(9)
    labels = (rng.random(4000) < 0.1).astype(int)
    report = ijb_scoring.verification_report(rng.standard_normal(4000) + 2 * labels, labels)
    out = write_roc_plot(tmp_path / "roc.png", report, "model on IJBC")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roc.png"]
