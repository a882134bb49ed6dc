"""The ROC of a verification protocol and TAR at fixed FAR, by two rules.

``roc_curve(labels, scores)`` is scikit-learn's ``sklearn.metrics.roc_curve`` with its defaults
(``pos_label=1``, no sample weights, ``drop_intermediate=True``), written out so that sklearn is not
needed at run time. With scores sorted in decreasing order (a stable sort, as sklearn's), each
distinct score ``s`` is a threshold (accept ``score >= s``); at it ``TP(s)`` genuine and ``FP(s)``
impostor pairs are accepted, and

    TPR(s) = TP(s) / #genuine,    FPR(s) = FP(s) / #impostor.

``drop_intermediate`` then drops every point that lies on a straight horizontal or vertical
segment between its neighbours (a zero second difference of both FP and TP counts), and the curve
starts at (0, 0) with threshold +inf. Dropping points does not change the curve's shape, but it
does change which *points* exist, so the nearest-FPR rule below can land elsewhere (on a small set
it moves TAR at FAR 1e-2).

TAR at FAR ``f`` (here FAR = FPR, TAR = TPR):

- ``nearest`` (upstream arcface_torch ``eval_ijbc.py``, so published tables compare): the TPR of
  the ROC point whose FPR is nearest ``f``, ``argmin |FPR_i - f|``; on a tie the point last in
  sklearn's order (larger FPR, or at equal FPR the larger TPR) wins, as upstream's reversed search
  gives. That point's FPR may be *above* ``f``.
- ``strict``: the largest TPR of a point with ``FPR <= f`` (the operating point a deployment with
  that false-accept budget could actually pick).
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

# TAR is reported at these FAR values; keys as they appear in the results JSON
FAR_TARGETS: Tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
RULES = ("nearest", "strict")


def far_key(far: float) -> str:
    """``1e-06`` style key of a FAR value (the results JSON's keys)."""
    return f"{far:.0e}"


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` exactly as ``sklearn.metrics.roc_curve(labels, scores)`` with its
    defaults (see the module docstring). ``labels``: 1 genuine, anything else impostor."""
    labels = np.asarray(labels).ravel() == 1
    scores = np.asarray(scores).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"roc_curve: {labels.size} labels but {scores.size} scores")
    order = np.argsort(scores, kind="mergesort")[::-1]
    scores = scores[order]
    labels = labels[order]
    # the last index of each run of equal scores: one ROC point per distinct threshold
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.cumsum(labels, dtype=np.float64)[last]
    fps = 1 + last - tps
    thresholds = scores[last]
    if fps.size > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    fps = np.r_[0.0, fps]
    tps = np.r_[0.0, tps]
    thresholds = np.r_[np.inf, thresholds]
    return fps / fps[-1], tps / tps[-1], thresholds


def operating_point(fpr: np.ndarray, tpr: np.ndarray, far: float, rule: str) -> int:
    """Index of the ROC point that gives TAR at FAR ``far`` by ``rule`` (see the module docstring)."""
    if rule == "nearest":
        distance = np.abs(fpr - far)
        return int(np.flatnonzero(distance == distance.min())[-1])
    if rule == "strict":
        # never empty (the curve starts at FPR 0); TPR does not fall along the curve, so the last
        # point within the budget has the largest TPR
        return int(np.flatnonzero(fpr <= far)[-1])
    raise ValueError(f"unknown TAR rule {rule!r}; allowed: {', '.join(RULES)}")


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, thresholds: np.ndarray, rule: str) -> Dict[str, dict]:
    """For each FAR target: ``{"tar", "far", "threshold"}`` of the point ``rule`` picks (threshold
    None for the curve's start, whose threshold is +inf: nothing accepted)."""
    points = {}
    for far in FAR_TARGETS:
        i = operating_point(fpr, tpr, far, rule)
        threshold = float(thresholds[i]) if np.isfinite(thresholds[i]) else None
        points[far_key(far)] = {"tar": float(tpr[i]), "far": float(fpr[i]), "threshold": threshold}
    return points
