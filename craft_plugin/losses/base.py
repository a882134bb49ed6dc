"""The margin-loss contract of arcface_torch's Partial FC, and validation helpers.

Partial FC calls ``margin_softmax(logits, labels)`` with ``logits`` the clamped cosines (B_global,
C_local) of this rank's (possibly sampled) class shard and ``labels`` (B, 1), -1 where the class
lives on another rank; it returns the logits of the distributed softmax cross-entropy.
:class:`MarginLoss` changes only the B target logits in place (``target_logit``) and scales the
whole matrix once (``scale``), like upstream's CombinedMarginLoss: no (B, C) one-hot. A loss that
also needs each row's feature norm sets ``needs_norms`` and receives ``norms`` (B_global, 1) from
:func:`craft_plugin.losses.norm_aware_pfc.norm_aware_partial_fc`, which also applies
``total_loss`` (loss weights, regularisers) to the cross-entropy.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from craft_plugin.errors import ConfigError

COS_EPS = 1e-6  # acos is clamped to [-1 + eps, 1 - eps]: finite gradients at cos = +-1


def theta_of(cos: torch.Tensor) -> torch.Tensor:
    return torch.acos(cos.clamp(-1 + COS_EPS, 1 - COS_EPS))


def require(key: str, value: float, ok: bool, allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok:
        raise ConfigError(key, value, allowed)
    return float(value)


def positive(key: str, value: float) -> float:
    return require(key, value, isinstance(value, (int, float)) and value > 0, "a number > 0")


def non_negative(key: str, value: float) -> float:
    return require(key, value, isinstance(value, (int, float)) and value >= 0, "a number >= 0")


def in_range(key: str, value: float, low: float, high: float) -> float:
    return require(key, value, isinstance(value, (int, float)) and low <= value <= high, f"a number in [{low:g}, {high:g}]")


class MarginLoss(torch.nn.Module):
    """Base class. Subclasses implement ``target_logit`` and may override ``scale``,
    ``total_loss`` and ``on_step``; ``s`` is the scale (hard normalisation)."""

    needs_norms = False

    def __init__(self, s: float):
        super().__init__()
        self.s = positive("margin_loss.s", s)

    def target_logit(self, cos: torch.Tensor, rows: torch.Tensor, batch: int) -> torch.Tensor:
        """New logits of the positive rows ``rows`` (indices into the global batch of ``batch``)."""
        raise NotImplementedError

    def scale(self, logits: torch.Tensor, norms: Optional[torch.Tensor]) -> torch.Tensor:
        return logits * self.s

    def total_loss(self, ce: torch.Tensor, norms: Optional[torch.Tensor], world_size: int) -> torch.Tensor:
        """The training loss from the distributed cross-entropy (identity by default)."""
        return ce

    def on_step(self) -> None:
        """One real optimizer step was taken (margin schedules)."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor,
                norms: Optional[torch.Tensor] = None) -> torch.Tensor:
        logits = logits.float()
        flat = labels.view(-1)
        rows = torch.nonzero(flat != -1).view(-1)
        cols = flat[rows]
        logits[rows, cols] = self.target_logit(logits[rows, cols], rows, logits.size(0))
        return self.scale(logits, norms)

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass
