"""Writing revived filters into the model and making everything they touch consistent.

For each revived output channel c of the first conv: its filter W_c is replaced; the optimizer
state rows of c are zeroed (SGD ``momentum_buffer``; Adam/AdamW ``exp_avg``, ``exp_avg_sq``) for
the conv weight and, when followers are reset, for the BatchNorm weight/bias and PReLU slope.
Followers (our choice, see docs/craft.md): BN gamma and beta take the median of the live
channels' values (1 and 0 when no channel is live), the running mean/variance of c restart at
BN's initial 0 and 1, and the PReLU slope takes the live channels' median (0.25 without any).
Gradients of the current step are left alone. Values are checked finite before anything is
written; a non-finite value is refused with an error and nothing changes.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch

from craft_plugin.reactivation.layer import FirstLayer

ADAM_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def median_or(values: torch.Tensor, live: torch.Tensor, default: float) -> float:
    return float(values.detach()[live].float().median()) if live.numel() else default


def follower_values(layer: FirstLayer, live: torch.Tensor) -> Dict[str, float]:
    values = {}
    if layer.bn is not None and layer.bn.affine:
        values["bn_weight"] = median_or(layer.bn.weight, live, 1.0)
        values["bn_bias"] = median_or(layer.bn.bias, live, 0.0)
    if layer.prelu is not None:
        values["prelu"] = median_or(layer.prelu.weight, live, 0.25)
    return values


def reset_optimizer_rows(optimizer: Optional[torch.optim.Optimizer], param: torch.Tensor,
                         rows: torch.Tensor) -> None:
    if optimizer is None:
        return
    state = optimizer.state.get(param)
    if not state:
        return
    for key in ("momentum_buffer",) + ADAM_KEYS:
        buf = state.get(key)
        if isinstance(buf, torch.Tensor) and buf.shape == param.shape:
            buf[rows] = 0


@torch.no_grad()
def apply_revival(layer: FirstLayer, optimizer: Optional[torch.optim.Optimizer], rows: List[int],
                  filters: torch.Tensor, live: torch.Tensor, reset_followers: bool) -> None:
    if not torch.isfinite(filters).all():
        raise FloatingPointError(f"refusing to write non-finite filters into {layer.name}")
    values = follower_values(layer, live) if reset_followers else {}
    if not all(math.isfinite(v) for v in values.values()):
        raise FloatingPointError(f"refusing to write non-finite BatchNorm/PReLU values after {layer.name}")
    index = torch.tensor(rows, dtype=torch.long, device=layer.conv.weight.device)
    weight = layer.conv.weight
    weight[index] = filters.to(device=weight.device, dtype=weight.dtype)
    reset_optimizer_rows(optimizer, weight, index)
    if not reset_followers:
        return
    if layer.bn is not None:
        if layer.bn.affine:
            layer.bn.weight[index] = values["bn_weight"]
            layer.bn.bias[index] = values["bn_bias"]
            reset_optimizer_rows(optimizer, layer.bn.weight, index)
            reset_optimizer_rows(optimizer, layer.bn.bias, index)
        if layer.bn.track_running_stats:
            layer.bn.running_mean[index] = 0.0
            layer.bn.running_var[index] = 1.0
    if layer.prelu is not None:
        layer.prelu.weight[index] = values["prelu"]
        reset_optimizer_rows(optimizer, layer.prelu.weight, index)
