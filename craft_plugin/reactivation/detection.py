"""Inactive filters: by weight norm (``relative``, ``absolute``) or by activation (``activation``).

Weight criteria, norm_i = ||W_i||_2 over (in, kh, kw). ``absolute``: inactive when
norm_i < threshold. ``relative``: inactive when norm_i < threshold * ref, where ref is the median
norm of the filters at or above the ``reference_quantile`` of the norms (the strong filters), so
the rule does not depend on the layer's overall scale, which BatchNorm makes arbitrary; only a
layer whose ref is below ``SILENT_REFERENCE_NORM`` (all zero, or uniformly tiny) counts as inactive
as a whole, so that it is revived (by the random fallback: no strong filter is left).

``activation`` (ReDo: Sokar, Agarwal, Castro, Evci, "The Dormant Neuron Phenomenon in Deep
Reinforcement Learning", ICML 2023): a_i = mean over the batch and positions of |y_i|, where y
is the output of the BatchNorm that follows the conv (of the conv itself when none does) on a
training batch; the score s_i = a_i / ((1/C) sum_j a_j) is relative to the layer mean, and the
filter is inactive when s_i < threshold. The controller measures a_i on the batch of the step a
check runs after (:mod:`craft_plugin.reactivation.capture`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

WEIGHT_CRITERIA = ("relative", "absolute")
CRITERIA = WEIGHT_CRITERIA + ("activation",)


@dataclass(frozen=True)
class Criterion:
    mode: str = "relative"
    threshold: float = 0.1
    reference_quantile: float = 0.75

    @property
    def uses_activations(self) -> bool:
        return self.mode == "activation"

    def describe(self) -> str:
        if self.mode == "absolute":
            return f"norm < {self.threshold:g}"
        if self.mode == "activation":
            return f"mean |BatchNorm output| < {self.threshold:g} x the layer's mean"
        return (f"norm < {self.threshold:g} x median norm of the filters above the "
                f"{self.reference_quantile:g} quantile")

    def in_words(self) -> str:
        """The rule as a sentence for pictures and pages, e.g. "inactive = a filter whose weights'
        L2 norm is below 0.1 x the median norm of the strongest 25% of the layer's filters"."""
        if self.mode == "absolute":
            return f"inactive = a filter whose weights' L2 norm is below {self.threshold:g}"
        if self.mode == "activation":
            return (f"inactive = a filter whose mean |BatchNorm output| on a training batch is below "
                    f"{self.threshold:g} x the layer's mean")
        return (f"inactive = a filter whose weights' L2 norm is below {self.threshold:g} x the median norm "
                f"of the strongest {100 * (1 - self.reference_quantile):g}% of the layer's filters")


def filter_norms(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().float().flatten(1).norm(dim=1)


def reference_norm(norms: torch.Tensor, quantile: float) -> float:
    """Median of the norms at or above the ``quantile`` (lower-rank convention)."""
    ordered = norms.sort().values
    return float(ordered[int(quantile * (ordered.numel() - 1)):].median())


def activation_scores(mean_abs: torch.Tensor) -> torch.Tensor:
    """s_i = a_i / mean_j a_j (all zero when the whole layer is silent)."""
    return mean_abs / mean_abs.mean().clamp_min(torch.finfo(mean_abs.dtype).tiny)


# relative criterion: a layer whose reference (strong-filter) norm is below this is silent as a whole,
# every filter inactive. BatchNorm after the conv divides by sqrt(var + 1e-5) >= 3e-3, so filters this
# small give outputs it cannot bring back to unit scale; a ratio against a reference of ~0 means nothing.
SILENT_REFERENCE_NORM = 1e-6


def inactive_mask(values: torch.Tensor, criterion: Criterion) -> torch.Tensor:
    """``values``: filter norms for the weight criteria, :func:`activation_scores` for ``activation``.
    Relative: ``norm_i < threshold * ref``, and every filter when ``ref < SILENT_REFERENCE_NORM``
    (an all-zero or uniformly tiny layer), which the check then revives with the random fallback."""
    if criterion.mode in ("absolute", "activation"):
        return values < criterion.threshold
    reference = reference_norm(values, criterion.reference_quantile)
    if reference < SILENT_REFERENCE_NORM:
        return torch.ones_like(values, dtype=torch.bool)
    return values < criterion.threshold * reference


def summarize(weight: torch.Tensor, criterion: Criterion) -> dict:
    """Per-filter norms, inactive indices and fraction of a first-layer weight (weight criteria)."""
    if criterion.mode not in WEIGHT_CRITERIA:
        raise ValueError(f"summarize reads weights only; criterion {criterion.mode!r} needs activations")
    norms = filter_norms(weight)
    inactive = torch.nonzero(inactive_mask(norms, criterion)).view(-1).tolist()
    return {"shape": list(weight.shape), "norms": [round(float(n), 6) for n in norms],
            "criterion": criterion.describe(), "inactive": inactive,
            "fraction": len(inactive) / norms.numel()}
