"""``random`` (ablation; RandomOut-style): a fresh filter at the layer's initial scale.

PyTorch's default Conv2d initialisation, kaiming-uniform with a = sqrt(5), i.e.
w ~ U(-b, b) with b = 1 / sqrt(fan_in), fan_in = in_channels * kh * kw. It ignores the strong
filters, so it also serves as the fallback when there are none.
"""
from __future__ import annotations

import math

import torch

from craft_plugin.reactivation.strategies import STRATEGIES


@STRATEGIES.register("random")
def random(weight: torch.Tensor, strong: torch.Tensor, count: int, generator: torch.Generator,
           options) -> torch.Tensor:
    fan_in = weight[0].numel()
    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand((count, *weight.shape[1:]), generator=generator) * 2 - 1) * bound
