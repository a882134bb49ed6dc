"""The compatibility patch's ``calculate_val`` line: on tied FAR values (which SciPy 1.9 and later
refuse in ``interp1d(kind="slinear")``) patched upstream must give the VAL that SciPy up to 1.8
gave, which is what ``eval bin`` reports. The patched text is taken from tests/test_patch.py's
stand-in checkout after ``craft-plugin patch``, and run inside upstream's fold loop written here
(unshuffled 10-fold split, thresholds 0, 0.001, ..., 3.999, ``d < t`` accepts)."""
from __future__ import annotations

import textwrap

import numpy as np
from scipy import interpolate

from craft_plugin.cli import main
from craft_plugin.evaluation.bin_eval import val_at_far
from test_patch import stand_in_checkout

THRESHOLDS = np.arange(0, 4, 0.001)
FAR_TARGET = 1e-3


def patched_threshold_block(root) -> str:
    """The patched ``if np.max(far_train) >= far_target: ... else: threshold = 0.0`` of
    eval/verification.py, dedented."""
    lines = (root / "eval" / "verification.py").read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if "if np.max(far_train) >= far_target:" in line)
    end = next(i for i in range(start, len(lines)) if "threshold = 0.0" in lines[i])
    return textwrap.dedent("".join(lines[start:end + 1]))


def upstream_val(dist, issame, choose_threshold) -> float:
    """calculate_val's mean VAL, ``choose_threshold(far_train)`` giving each fold's threshold."""
    n, folds = dist.size, 10
    sizes = [n // folds + (1 if k < n % folds else 0) for k in range(folds)]
    starts = np.cumsum([0] + sizes)
    vals = []
    for k in range(folds):
        test = np.zeros(n, dtype=bool)
        test[starts[k]:starts[k + 1]] = True
        impostor_train = dist[~test & ~issame]
        far_train = np.array([np.sum(impostor_train < t) / impostor_train.size for t in THRESHOLDS])
        threshold = choose_threshold(far_train)
        accept = dist[test] < threshold
        vals.append(np.sum(accept & issame[test]) / np.sum(issame[test]))
    return float(np.mean(vals))


def tied_far_case():
    """600 pairs whose squared distances sit on a 0.01 grid: FAR(t) repeats each value over runs of
    thresholds, on both sides of 1e-3."""
    rng = np.random.default_rng(5)
    issame = np.arange(600) % 2 == 0
    dist = np.where(issame, rng.normal(0.9, 0.3, 600), rng.normal(1.6, 0.3, 600))
    return np.round(np.clip(dist, 0, 3.99), 2), issame


def test_patched_calculate_val_gives_scipy_1_8_val_on_tied_fars(tmp_path):
    root = stand_in_checkout(tmp_path)
    assert main(["patch", str(root)]) == 0
    block = compile(patched_threshold_block(root), "patched eval/verification.py", "exec")

    def patched(far_train):
        scope = {"np": np, "interpolate": interpolate, "far_train": far_train, "thresholds": THRESHOLDS,
                 "far_target": FAR_TARGET}
        exec(block, scope)
        return scope["threshold"]

    def keep_first_of_each_far(far_train):   # the de-duplication this line replaced
        far, first = np.unique(far_train, return_index=True)
        return interpolate.interp1d(far, THRESHOLDS[first], kind="slinear")(FAR_TARGET)

    dist, issame = tied_far_case()
    want = val_at_far(dist, issame)["val"]
    assert 0.05 < want < 0.95
    assert upstream_val(dist, issame, patched) == want
    # the case is one where the tie handling matters
    assert abs(upstream_val(dist, issame, keep_first_of_each_far) - want) > 0.05
