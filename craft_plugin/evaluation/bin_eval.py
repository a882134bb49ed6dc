"""The LFW-style ``.bin`` verification sets (lfw, cfp_fp, agedb_30, calfw, cplfw) scored as
arcface_torch's ``eval/verification.py`` scores them, without mxnet, sklearn or scipy.

For each set (pairs i = images 2i, 2i + 1, read by :func:`craft_plugin.data.binfile.load_bin`) the
model embeds the images and their horizontal flips; the protocol of
:mod:`craft_plugin.data.verification` gives the squared distance d of each pair between the
flip-summed, L2-normalised embeddings (in float64, as upstream's ``test()``), the 10-fold accuracy
(threshold in arange(0, 4, 0.01) chosen on 9 folds, scored on the 10th), its standard deviation over
the folds (numpy's, ddof 0) and XNorm (the mean norm of all embeddings of both views).

VAL at FAR 1e-3 is upstream's ``calculate_val`` (FaceNet's protocol, Schroff et al. 2015): on
the 9 training folds, FAR(t) = #{impostor pairs with d < t} / #impostors for t in
arange(0, 4, 0.001); the threshold is FAR's inverse at 1e-3 by piecewise-linear interpolation
(``scipy.interpolate.interp1d(FAR, t, kind="slinear")``, or 0 when FAR never reaches 1e-3), and on
the held-out fold VAL = #{genuine pairs with d < threshold} / #genuine; the mean (and std) over the
10 folds, beside the mean FAR reached. SciPy 1.9 and later refuse that call ("Expect x to not have
duplicates": FAR(t) repeats values), so upstream's ``test()`` fails there; :func:`slinear_inverse`
computes what SciPy up to 1.8 returned: a degree-1 B-spline with knots (x0, x0, ..., xn, xn), which
on repeated values interpolates from the last of them."""
from __future__ import annotations

import hashlib
import logging
import pickle
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

from craft_plugin.cli import UsageError
from craft_plugin.data.verification import flip_sum_distances, kfold_accuracy, kfold_indices
from craft_plugin.evaluation.models import Embedder

FOLDS = 10
VAL_FAR = 1e-3
VAL_KEY = "val_at_far_1e-3"
VAL_THRESHOLDS = np.arange(0, 4, 0.001)   # upstream's evaluate() for calculate_val
CHUNK = 1024                              # images handed to the embedder at a time


def set_paths(data_dir: str, targets: Sequence[str]) -> Dict[str, Path]:
    """``{name: DIR/name.bin}``; a missing file is one error naming it."""
    root = Path(data_dir)
    if not root.is_dir():
        raise UsageError(f"--data {data_dir}: not a folder")
    paths = {}
    for name in targets:
        path = root / f"{name}.bin"
        if not path.is_file():
            raise UsageError(f"--data {data_dir}: no {path.name} there (for --targets {name}); "
                             f"found {sorted(p.name for p in root.glob('*.bin')) or 'no .bin files'}")
        paths[name] = path
    return paths


def slinear_inverse(x: np.ndarray, y: np.ndarray, at: float) -> float:
    """``interp1d(x, y, kind="slinear")(at)`` as SciPy <= 1.8 computed it for a non-decreasing ``x``
    with repeated values: the degree-1 B-spline with knots t = (x0, x0, x1, ..., xn, xn) and
    coefficients y, evaluated as de Boor's recursion does (interval l: the last with t[l] <= at)."""
    t = np.concatenate([x[:1], x, x[-1:]])
    l = int(np.clip(np.searchsorted(t, at, side="right") - 1, 1, x.size - 1))
    if t[l + 1] == t[l]:  # only at the last value, repeated: de Boor's recursion gives 0 there
        return 0.0
    w = 1.0 / (t[l + 1] - t[l])
    return float(y[l - 1] * (w * (t[l + 1] - at)) + y[l] * (w * (at - t[l])))


def val_far(threshold: float, dist: np.ndarray, issame: np.ndarray) -> tuple:
    """``(VAL, FAR)`` at ``threshold``: the fractions of genuine / impostor pairs with d < threshold."""
    accept = dist < threshold
    return float(np.sum(accept & issame)) / float(np.sum(issame)), float(np.sum(accept & ~issame)) / float(np.sum(~issame))


def val_at_far(dist: np.ndarray, issame: np.ndarray, far_target: float = VAL_FAR, folds: int = FOLDS,
               thresholds: np.ndarray = VAL_THRESHOLDS) -> Optional[Dict[str, float]]:
    """Upstream's ``calculate_val``: mean VAL, its std and the mean FAR over the folds; None when a
    fold holds no genuine or no impostor pair (VAL or FAR is then undefined; upstream divides by zero)."""
    val, far = np.zeros(folds), np.zeros(folds)
    everything = np.arange(dist.size)
    for fold, test in enumerate(kfold_indices(dist.size, folds)):
        train = np.setdiff1d(everything, test)
        if issame[test].all() or not issame[test].any() or issame[train].all() or not issame[train].any():
            return None
        impostors = np.sort(dist[train][~issame[train]])
        far_train = np.searchsorted(impostors, thresholds, side="left") / float(impostors.size)
        threshold = slinear_inverse(far_train, thresholds, far_target) if far_train.max() >= far_target else 0.0
        val[fold], far[fold] = val_far(threshold, dist[test], issame[test])
    return {"val": float(val.mean()), "val_std": float(val.std()), "far": float(far.mean())}


def embed_views(embedder: Embedder, views: Sequence[Any], name: str) -> List[np.ndarray]:
    """float64 embeddings of each view (float32 0..255 tensors (N, 3, H, W)), as upstream holds them."""
    import torch
    from tqdm import tqdm

    out = []
    for view in views:
        parts = []
        for start in tqdm(range(0, view.shape[0], CHUNK), desc=f"{name} embed", unit="chunk", leave=False,
                          file=sys.stderr, disable=None):
            chunk = view[start:start + CHUNK].to(torch.uint8).permute(0, 2, 3, 1).numpy()
            parts.append(embedder.embed(chunk))
        out.append(np.concatenate(parts).astype(np.float64))
    return out


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def evaluate_set(name: str, path: Path, embedder: Embedder, folds: int = FOLDS) -> Dict[str, Any]:
    """One ``.bin``'s numbers (accuracy, std, xnorm, pairs, per-fold accuracy, VAL at FAR 1e-3)."""
    from craft_plugin.data.binfile import load_bin

    try:
        data_set = load_bin(str(path), embedder.input_size)
    except (ValueError, pickle.UnpicklingError, OSError, RuntimeError) as exc:
        raise UsageError(str(exc).splitlines()[0]) from exc
    views, issame_list = data_set
    issame = np.asarray(issame_list, dtype=bool)
    if issame.size < folds:
        raise UsageError(f"{path}: {issame.size} pairs, fewer than the {folds} folds of the protocol")
    dist, xnorm = flip_sum_distances(embed_views(embedder, views, name))
    accuracy = kfold_accuracy(dist, issame, folds)
    val = val_at_far(dist, issame, VAL_FAR, folds)
    if val is None:
        logging.warning("%s: a fold holds only genuine or only impostor pairs; VAL at FAR %g is undefined", path, VAL_FAR)
    return {"accuracy": float(accuracy.mean()), "std": float(accuracy.std()), "xnorm": xnorm,
            "pairs": int(issame.size), "genuine": int(issame.sum()), "folds": folds,
            "fold_accuracy": [float(a) for a in accuracy],
            VAL_KEY: None if val is None else val["val"], "val_std": None if val is None else val["val_std"],
            "far": None if val is None else val["far"], "file": str(path.resolve()), "sha256": sha256(path)}


def evaluate(data_dir: str, targets: Iterable[str], embedder: Embedder) -> Dict[str, Any]:
    """The ``eval bin`` document: ``{"kind": "bin", "model": ..., "targets": {name: numbers}}``."""
    paths = set_paths(data_dir, list(targets))
    return {"kind": "bin", "model": embedder.describe(),
            "targets": {name: evaluate_set(name, path, embedder) for name, path in paths.items()}}


def table(document: Dict[str, Any]) -> List[str]:
    """The human-readable table of an ``eval bin`` document."""
    lines = [f"{'set':<10}{'pairs':>7}{'accuracy +- std':>20}{'XNorm':>9}{'VAL@FAR=1e-3':>14}{'FAR':>9}"]
    for name, r in document["targets"].items():
        val = "undefined" if r[VAL_KEY] is None else f"{r[VAL_KEY]:.5f}"
        far = "" if r["far"] is None else f"{r['far']:.5f}"
        lines.append(f"{name:<10}{r['pairs']:>7d}{r['accuracy']:>11.5f} +- {r['std']:.5f}{r['xnorm']:>9.3f}"
                     f"{val:>14}{far:>9}")
    return lines
