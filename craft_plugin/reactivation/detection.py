"""Inactive filters: per-filter L2 norms against a threshold.

norm_i = ||W_i||_2 over (in, kh, kw). ``absolute``: inactive when norm_i < threshold.
``relative``: inactive when norm_i < threshold * ref, where ref is the median norm of the filters
at or above the ``reference_quantile`` of the norms (the strong filters), so the rule does not
depend on the layer's overall scale, which BatchNorm makes arbitrary.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Criterion:
    mode: str = "relative"
    threshold: float = 0.1
    reference_quantile: float = 0.75

    def describe(self) -> str:
        if self.mode == "absolute":
            return f"norm < {self.threshold:g}"
        return (f"norm < {self.threshold:g} x median norm of the filters above the "
                f"{self.reference_quantile:g} quantile")


def filter_norms(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().float().flatten(1).norm(dim=1)


def reference_norm(norms: torch.Tensor, quantile: float) -> float:
    """Median of the norms at or above the ``quantile`` (lower-rank convention)."""
    ordered = norms.sort().values
    return float(ordered[int(quantile * (ordered.numel() - 1)):].median())


def inactive_mask(norms: torch.Tensor, criterion: Criterion) -> torch.Tensor:
    if criterion.mode == "absolute":
        return norms < criterion.threshold
    return norms < criterion.threshold * reference_norm(norms, criterion.reference_quantile)


def summarize(weight: torch.Tensor, criterion: Criterion) -> dict:
    """Per-filter norms, inactive indices and fraction of a first-layer weight."""
    norms = filter_norms(weight)
    inactive = torch.nonzero(inactive_mask(norms, criterion)).view(-1).tolist()
    return {"shape": list(weight.shape), "norms": [round(float(n), 6) for n in norms],
            "criterion": criterion.describe(), "inactive": inactive,
            "fraction": len(inactive) / norms.numel()}
