"""The ROC plot of an IJB 1:1 evaluation: TPR (TAR) against FPR (FAR) on a log axis, with the operating
points of both TAR rules at each FAR target marked. Needs matplotlib (``pip install 'craft-plugin[eval]'``)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from craft_plugin.atomic_save import staging_path
from craft_plugin.cli import UsageError
from craft_plugin.evaluation.roc import FAR_TARGETS


def require_matplotlib():
    """matplotlib, or one UsageError naming the extra that installs it (``eval ijb`` calls this before
    it embeds, so that a missing matplotlib is not found only after hours of embedding)."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError("the ROC plot needs matplotlib: pip install 'craft-plugin[eval]' (or pip install matplotlib)") from None
    return matplotlib


def write_roc_plot(path, report: dict, title: str) -> Path:
    """Write the ROC of ``report`` (``ijb_scoring.verification_report`` or ``run_scoring``'s result:
    its ``roc`` arrays, ``operating_points`` and ``auc``) as a PNG at ``path``, atomically."""
    matplotlib = require_matplotlib()
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    path = Path(path)
    fpr, tpr = report["roc"]["fpr"], report["roc"]["tpr"]
    points = report["operating_points"]
    low = min(FAR_TARGETS) / 2
    fig = Figure(figsize=(7.0, 5.0), dpi=110)
    ax = fig.subplots()
    # FPR 0 has no place on a log axis: the part of the curve at FPR 0 (its best TPR) and the points
    # there are drawn at the left edge
    shown = fpr > 0
    ax.plot(np.r_[low, fpr[shown]], np.r_[tpr[~shown].max(), tpr[shown]],
            color="tab:blue", lw=1.3, drawstyle="steps-post",
            label=f"ROC (AUC {100 * report['auc']:.2f}%, {report['genuine']} genuine, {report['impostor']} impostor pairs)")
    for rule, marker, colour, name in (("nearest", "o", "tab:orange", "nearest-FPR rule (upstream's)"),
                                       ("strict", "s", "tab:green", "strict rule (FPR <= target)")):
        xs = [max(p["far"], low) for p in points[rule].values()]
        ys = [p["tar"] for p in points[rule].values()]
        ax.scatter(xs, ys, marker=marker, s=36, facecolors="none", edgecolors=colour, linewidths=1.4,
                   zorder=3, label=f"TAR at FAR {name}")
    for far in FAR_TARGETS:
        ax.axvline(far, color="0.85", lw=0.8, zorder=0)
    ax.set_xscale("log")
    ax.set_xlim(low, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xticks(FAR_TARGETS + (1.0,))
    ax.set_xlabel("False accept rate (FAR = FPR), log scale; FPR 0 at the left edge")
    ax.set_ylabel("True accept rate (TAR = TPR)")
    ax.set_title(title)
    ax.grid(True, which="major", axis="y", color="0.9")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    partial = Path(staging_path(path))
    try:
        fig.savefig(partial, format="png")
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    return path
