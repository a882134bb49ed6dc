"""IJB-B / IJB-C 1:1 scoring: image features -> template features -> pair scores -> TAR at FAR.

Number for number what arcface_torch's ``eval_ijbc.py`` computes (Whitelam et al., IJB-B, CVPRW
2017; Maze et al., IJB-C, ICB 2018; the aggregation of Deng et al., ArcFace, CVPR 2019), from the
raw embeddings ``raw[i, 0]`` (aligned image) and ``raw[i, 1]`` (its horizontal flip), float32:

1. image feature (``image_features``):  x_i = raw[i,0] + raw[i,1]  (flip test; without it raw[i,0]);
   without norm score x_i <- x_i / ||x_i||;  with detector score x_i <- x_i * faceness_i.
2. media feature: the mean of x_i over the images of one media (video or still) within a template;
   template feature: the sum of its media features, then L2-normalised (``template_features``).
   The mean and the sum are float32 and add in image order, as upstream; the normalisation is float64
   (upstream's template array is float64).
3. pair score: the cosine of the two template features (``pair_scores``), float64.
4. ROC and TAR at FAR by upstream's nearest-FPR rule and by the strict rule (``verification_report``,
   see :mod:`craft_plugin.evaluation.roc`).

Only ``run_scoring`` reads a file (the release's 1:N lists, when present); the rest is numpy.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np

from craft_plugin.cli import UsageError
from craft_plugin.evaluation import roc

# images aggregated per step (bounds the gathered float32 block: 65536 x 512 x 4 B = 128 MiB)
IMAGE_CHUNK = 1 << 16
# pairs scored per step: what scoring holds besides the output does not grow with the pair count
PAIR_CHUNK = 1 << 21
# the largest block of template-by-template products computed at once (float64 entries: 32 MiB)
BLOCK_ENTRIES = 1 << 22
# a block of pairs is scored by one matrix product when it computes at most this many products per
# pair (a float64 GEMM entry costs about a tenth of gathering a pair's two rows), else row by row
DENSE_PER_PAIR = 8
# rows gathered at once on the row-by-row path (16384 x 512 x 8 B = 64 MiB)
GATHER_ROWS = 1 << 14


def image_features(raw: np.ndarray, faceness: np.ndarray, flip: bool = True, norm_score: bool = True,
                   detector_score: bool = True) -> np.ndarray:
    """(N, D) float32 image features from raw (N, 2, D) embeddings (step 1 of the module docstring)."""
    raw = np.asarray(raw)
    if raw.ndim != 3 or raw.shape[1] != 2:
        raise ValueError(f"raw features must have shape (images, 2, dim), got {raw.shape}")
    x = raw[:, 0] + raw[:, 1] if flip else np.array(raw[:, 0])
    x = x.astype(np.float32, copy=False)
    if not norm_score:
        x = x / np.sqrt(np.sum(x ** 2, -1, keepdims=True))
    if detector_score:
        x = x * np.asarray(faceness, dtype=np.float32)[:, np.newaxis]
    return x


def template_features(img_feats: np.ndarray, templates: np.ndarray, medias: np.ndarray
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """``(template_ids (T,) sorted, feats (T, D) float64 L2-normalised)`` (step 2 of the module
    docstring), equal to upstream's ``image2template_feature``."""
    return aggregate_templates(lambda rows: np.asarray(img_feats[rows], dtype=np.float32),
                               np.asarray(templates), np.asarray(medias))


def aggregate_templates(rows_of: Callable[[np.ndarray], np.ndarray], templates: np.ndarray, medias: np.ndarray
                        ) -> Tuple[np.ndarray, np.ndarray]:
    """``template_features`` with the image features given by ``rows_of(indices) -> (k, D) float32``,
    so that they can be computed chunk by chunk from the raw features (no (N, D) array is held)."""
    if templates.shape != medias.shape or templates.ndim != 1 or templates.size == 0:
        raise ValueError(f"templates and medias must be equal non-empty 1-d arrays, got {templates.shape} "
                         f"and {medias.shape}")
    # by template, then media, then image order (lexsort is stable): each media's images are a run
    order = np.lexsort((medias, templates))
    t, m = templates[order], medias[order]
    media_start = np.flatnonzero(np.r_[True, (t[1:] != t[:-1]) | (m[1:] != m[:-1])])
    media_template = t[media_start]
    template_ids, template_start = np.unique(media_template, return_index=True)
    media_end = np.r_[media_start[1:], t.size]

    # one float32 row per media: the mean of its images (a sum in image order, then one division)
    media_feats: Optional[np.ndarray] = None
    first = 0
    while first < media_start.size:
        # whole medias only, at most IMAGE_CHUNK images per step (or one media, when it is larger)
        a = media_start[first]
        last = max(first + 1, int(np.searchsorted(media_end, a + IMAGE_CHUNK, side="right")))
        block = rows_of(order[a:media_end[last - 1]])
        if media_feats is None:
            media_feats = np.empty((media_start.size, block.shape[1]), np.float32)
        counts = media_end[first:last] - media_start[first:last]
        sums = _segment_sums(block, media_start[first:last] - a, counts)
        media_feats[first:last] = sums / counts.astype(np.float32)[:, np.newaxis]
        first = last

    # the template feature: float32 sum of its media rows in media-id order, then float64 L2 norm
    feats = _segment_sums(media_feats, template_start, np.diff(np.r_[template_start, media_start.size]))
    feats = feats.astype(np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", feats, feats))
    norms[norms == 0.0] = 1.0  # an all-zero template stays zero, as sklearn.preprocessing.normalize
    feats /= norms[:, np.newaxis]
    return template_ids, feats


def _segment_sums(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Sum of each run ``values[starts[j]:starts[j] + lengths[j]]``, its rows added one after the
    other in order, as ``np.sum(run, axis=0)`` adds them (``np.add.reduceat`` adds in another order
    and differs in the last float32 bit). Vectorised over the runs: step k adds every run's k-th row."""
    by_length = np.argsort(-lengths, kind="stable")
    first = starts[by_length]
    remaining = lengths[by_length]
    descending = -remaining
    sums = values[first].copy()
    for k in range(1, int(remaining[0])):
        alive = int(np.searchsorted(descending, -k))  # the runs longer than k: a prefix, longest first
        sums[:alive] += values[first[:alive] + k]
    out = np.empty_like(sums)
    out[by_length] = sums
    return out


def pair_scores(template_ids: np.ndarray, feats: np.ndarray, p1: np.ndarray, p2: np.ndarray,
                chunk: int = PAIR_CHUNK) -> np.ndarray:
    """(P,) float64 cosine scores ``<feats[p1_k], feats[p2_k]>`` of template pairs (features already
    L2-normalised; ``template_ids`` sorted, as ``template_features`` returns them).

    The pairs are scored ``chunk`` at a time, so that the memory used besides the (P,) result does
    not depend on P. Within a chunk the pairs are grouped by first template (sorted, unless the list
    already is grouped); for a block of first templates the scores of all their pairs come from one
    matrix product with the block's second templates when that product is at most
    ``DENSE_PER_PAIR`` times the pair count (IJB-C's gallery-against-probe pairs), else from one
    matrix-vector product per first template.
    A pair naming a template not in ``template_ids`` is refused (upstream scored it as template 0)."""
    template_ids = np.asarray(template_ids)
    feats = np.ascontiguousarray(feats, dtype=np.float64)
    p1, p2 = np.asarray(p1), np.asarray(p2)
    if p1.shape != p2.shape or p1.ndim != 1:
        raise ValueError(f"p1 and p2 must be equal 1-d arrays, got {p1.shape} and {p2.shape}")
    scores = np.empty(p1.size, np.float64)
    for start in range(0, p1.size, chunk):
        stop = min(start + chunk, p1.size)
        rows = _positions(template_ids, p1[start:stop], start)
        cols = _positions(template_ids, p2[start:stop], start)
        scores[start:stop] = _chunk_scores(feats, rows, cols)
    return scores


def _positions(template_ids: np.ndarray, ids: np.ndarray, offset: int) -> np.ndarray:
    """Row of each template id in ``template_ids``; a pair naming an unknown template is refused."""
    pos = np.minimum(np.searchsorted(template_ids, ids), template_ids.size - 1)
    bad = np.flatnonzero(template_ids[pos] != ids)
    if bad.size:
        k = int(bad[0])
        raise UsageError(f"pair {offset + k} (0-based) names template {ids[k]}, which has no image")
    return pos


def _chunk_scores(feats: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    n_templates = feats.shape[0]
    run_starts = np.r_[0, np.flatnonzero(rows[1:] != rows[:-1]) + 1]
    # a list grouped by first template (each in one run, as IJB's lists are) needs no sort
    grouped = run_starts.size == np.count_nonzero(np.bincount(rows, minlength=n_templates))
    order = None if grouped else np.argsort(rows, kind="stable")
    if not grouped:
        rows, cols = rows[order], cols[order]
        run_starts = np.r_[0, np.flatnonzero(rows[1:] != rows[:-1]) + 1]
    run_ends = np.r_[run_starts[1:], rows.size]
    out = np.empty(rows.size, np.float64)
    runs_per_block = max(1, BLOCK_ENTRIES // n_templates)  # products held: runs x partners <= BLOCK_ENTRIES
    local_row = np.empty(n_templates, np.int64)
    local_col = np.empty(n_templates, np.int64)
    for g in range(0, run_starts.size, runs_per_block):
        first, last = run_starts[g], run_ends[min(g + runs_per_block, run_starts.size) - 1]
        block_rows = rows[run_starts[g:g + runs_per_block]]
        rr, cc = rows[first:last], cols[first:last]
        partners = np.unique(cc)
        if block_rows.size * partners.size <= DENSE_PER_PAIR * (last - first):
            local_row[block_rows] = np.arange(block_rows.size)
            local_col[partners] = np.arange(partners.size)
            products = feats[block_rows] @ feats[partners].T
            out[first:last] = products[local_row[rr], local_col[cc]]
        else:
            for a, b in zip(run_starts[g:g + runs_per_block], run_ends[g:g + runs_per_block]):
                for u in range(a, b, GATHER_ROWS):
                    v = min(u + GATHER_ROWS, b)
                    out[u:v] = feats[cols[u:v]] @ feats[rows[a]]
    if grouped:
        return out
    scores = np.empty_like(out)
    scores[order] = out
    return scores


def verification_report(scores: np.ndarray, labels: np.ndarray) -> dict:
    """ROC of the pair scores and TAR at each FAR of ``roc.FAR_TARGETS`` by both rules.

    Returns ``tar_at_far`` (upstream's nearest-FPR rule) and ``tar_at_far_strict`` (largest TPR with
    FPR <= FAR), each ``{"1e-06": tar, ...}`` as fractions; ``operating_points`` (for each rule and
    FAR the chosen point's ``tar``, ``far`` and ``threshold``); ``auc`` (trapezoidal, as sklearn's
    ``auc``); the ``genuine`` and ``impostor`` counts; and ``roc``: the curve as numpy arrays
    ``fpr``, ``tpr``, ``thresholds`` (for the plot; not JSON)."""
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise UsageError(f"pair {int(bad[0])} (0-based) has a non-finite score {scores[bad[0]]}: "
                         "the features hold NaN or infinity")
    genuine = int(np.count_nonzero(labels == 1))
    impostor = int(labels.size - genuine)
    if genuine == 0 or impostor == 0:
        raise UsageError(f"the pair list has {genuine} genuine (label 1) and {impostor} impostor pairs; "
                         "a ROC needs both")
    fpr, tpr, thresholds = roc.roc_curve(labels, scores)
    points = {rule: roc.tar_at_far(fpr, tpr, thresholds, rule) for rule in roc.RULES}
    return {
        "tar_at_far": {k: v["tar"] for k, v in points["nearest"].items()},
        "tar_at_far_strict": {k: v["tar"] for k, v in points["strict"].items()},
        "operating_points": points,
        "auc": float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0),
        "genuine": genuine,
        "impostor": impostor,
        "roc": {"fpr": fpr, "tpr": tpr, "thresholds": thresholds},
    }


def run_scoring(meta, raw_features: np.ndarray, flip: bool = True, norm_score: bool = True,
                detector_score: bool = True) -> dict:
    """Everything ``eval ijb`` reports from the raw features of ``meta``'s images (an
    ``ijb_meta.IJBMeta``; ``raw_features`` (N, 2, D) in its image order, e.g. the features file's
    memmap, read a chunk at a time).

    Returns the results document's body: ``target``, ``options``, ``images``, ``templates``,
    ``pairs``, the keys of ``verification_report`` and ``identification`` (the 1:N report when the
    release's 1:N lists are present, else None); plus two keys that are not JSON and must be taken
    out before writing it: ``scores`` ((P,) float64, in pair-list order) and ``roc`` (the curve)."""
    from craft_plugin.evaluation import identification

    if raw_features.shape[0] != meta.templates.size:
        raise UsageError(f"the features hold {raw_features.shape[0]} images but the meta lists "
                         f"{meta.templates.size}")
    faceness = np.asarray(meta.faceness, dtype=np.float32)

    def rows_of(rows: np.ndarray) -> np.ndarray:
        ascending = np.argsort(rows)  # read the memmap in file order, hand back in the asked order
        block = np.empty((rows.size, raw_features.shape[2]), np.float32)
        block[ascending] = image_features(raw_features[rows[ascending]], faceness[rows[ascending]],
                                          flip, norm_score, detector_score)
        return block

    template_ids, feats = aggregate_templates(rows_of, np.asarray(meta.templates), np.asarray(meta.medias))
    scores = pair_scores(template_ids, feats, meta.p1, meta.p2)
    report = verification_report(scores, meta.labels)
    lists = identification.read_1n_lists(meta.root, meta.target)
    ident = identification.identification_report(template_ids, feats, lists) if lists is not None else None
    return {
        "target": meta.target,
        "options": {"flip": bool(flip), "norm_score": bool(norm_score), "detector_score": bool(detector_score)},
        "images": int(meta.templates.size),
        "templates": int(template_ids.size),
        "pairs": int(scores.size),
        **report,
        "identification": ident,
        "scores": scores,
    }
