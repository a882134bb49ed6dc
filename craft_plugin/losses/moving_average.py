"""Exponential moving averages of batch statistics kept by margin losses (AdaFace, CurricularFace)."""
from __future__ import annotations

import torch

from craft_plugin.validation import number


def momentum(key: str, value: float) -> float:
    """A moving-average weight of the new value, in (0, 1]."""
    return number(key, value, lambda v: 0 < v <= 1, "a number in (0, 1]")


def update_(average: torch.Tensor, value: torch.Tensor, alpha: float) -> torch.Tensor:
    """In place: average <- alpha * value + (1 - alpha) * average (the authors' order of terms)."""
    with torch.no_grad():
        return average.copy_(value * alpha + (1 - alpha) * average)
