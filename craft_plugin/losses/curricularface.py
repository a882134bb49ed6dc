"""CurricularFace (Huang, Wang, Tai, Liu, Shen, Li, Li, Huang; CVPR 2020, arXiv 2004.00288):
hard negatives weighted by a curriculum that follows training progress.

    target logit  T(cos theta_y) = cos(theta_y + m)           if theta_y + m <= pi
                                 = cos theta_y - m sin(pi - m)  otherwise (ArcFace's fallback)
    t <- alpha mean_i(cos theta_{y_i}) + (1 - alpha) t          (t = 0 at the start, no gradient)
    negative j of row i: cos theta_j (t + cos theta_j)  if cos theta_j > cos(theta_{y_i} + m), else cos theta_j
    every logit times s

t is updated with the current batch before use, over the GLOBAL batch; the hard-negative
threshold uses cos(theta_y + m) without the fallback, as the official code. Gradients are the true
ones (t + 2 cos theta_j on hard negatives, that of T on targets). Defaults: s=64, m=0.5,
alpha=0.01, the official code's (github HuangYG123/CurricularFace head/metrics.py).

Across ranks: a row's target cosine lives on one class shard, but its threshold is needed on every
shard and t needs all of them: each rank contributes its positive rows' target cosines and one
all-reduce of B floats completes them (as ElasticFace "+"), so every rank applies exactly the
threshold and t of an unsharded computation of the same batch.
"""
from __future__ import annotations

import math

import torch

from craft_plugin.distributed import all_reduce_
from craft_plugin.losses.base import (MarginLoss, _target_grad, _targets_through, at_least_float32, target_positions,
                                      theta_of)
from craft_plugin.losses.moving_average import momentum, update_
from craft_plugin.losses.registry import MARGIN_LOSSES
from craft_plugin.validation import in_range


def curriculum(cos: torch.Tensor, threshold: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A new tensor: c (t + c) where c > threshold (the row's hard negatives), c elsewhere."""
    out = cos + t
    out.mul_(cos)
    return torch.where(cos > threshold, out, cos, out=out)


def curriculum_slope(cos: torch.Tensor, threshold: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Its derivative in c: t + 2c on hard negatives, 1 elsewhere (t and the thresholds are constants)."""
    out = cos * 2
    out.add_(t)
    return torch.where(cos > threshold, out, torch.ones((), dtype=out.dtype), out=out)


class _CurricularLogits(torch.autograd.Function):
    """s * (targets through ``fn``, hard negatives c (t + c), the rest c) as a new (B, C) buffer.

    The input cosines are kept for the backward (the hard negatives' derivative t + 2c needs
    them); the hard-negative mask is recomputed from them and the B thresholds, not stored.
    """

    @staticmethod
    def forward(ctx, logits, rows, cols, fn, threshold, t, s):
        new = _targets_through(ctx, logits, rows, cols, fn)
        with torch.no_grad():
            out = curriculum(logits, threshold, t)
            out[rows, cols] = new
            out.mul_(s)
        ctx.save_for_backward(logits, rows, cols, threshold, t)
        ctx.s = s
        return out

    @staticmethod
    def backward(ctx, grad):
        logits, rows, cols, threshold, t = ctx.saved_tensors
        out = curriculum_slope(logits, threshold, t)
        out.mul_(grad).mul_(ctx.s)
        out[rows, cols] = _target_grad(ctx, grad[rows, cols] * ctx.s).to(out.dtype)
        return out, None, None, None, None, None, None


@MARGIN_LOSSES.register("curricularface")
class CurricularFace(MarginLoss):
    needs_target_cosines = True
    source = "CurricularFace, arXiv 2004.00288; official code (github HuangYG123/CurricularFace head/metrics.py)"

    def __init__(self, s: float = 64.0, m: float = 0.5, alpha: float = 0.01):
        super().__init__(s)
        self.m = in_range("margin_loss.m", m, 0.0, math.pi / 2)
        self.alpha = momentum("margin_loss.alpha", alpha)
        # not in Partial FC's state_dict (its keys stay upstream's); checkpointed via extra_state
        self.register_buffer("t", torch.zeros(()), persistent=False)
        self.threshold = self.row_t = None  # this step's, set by prepare_targets

    def target_logit(self, cos, rows, batch):
        shifted = torch.cos(theta_of(cos) + self.m)
        return torch.where(cos > math.cos(math.pi - self.m), shifted, cos - math.sin(math.pi - self.m) * self.m)

    def margin_forward(self, logits, labels, norms=None):
        logits = at_least_float32(logits)
        rows, cols = target_positions(labels)
        batch = logits.size(0)
        with torch.no_grad():
            target = torch.zeros(batch, dtype=logits.dtype, device=logits.device)
            target[rows] = logits[rows, cols]
        self.prepare_targets(target)
        return _CurricularLogits.apply(logits, rows, cols, lambda cos: self.target_logit(cos, rows, batch),
                                       self.threshold, self.row_t, self.s)

    def prepare_targets(self, target: torch.Tensor) -> None:
        """Completes this rank's target cosines over the ranks, advances t and sets this step's
        thresholds cos(theta_y + m) (B, 1) and t, both without gradient."""
        with torch.no_grad():
            all_reduce_(target)  # every row's target cosine, whichever rank holds its class
            update_(self.t, target.mean(), self.alpha)
            self.threshold = torch.cos(theta_of(target) + self.m).view(-1, 1)
            self.row_t = self.t.to(target.dtype, copy=True)

    def logit_map(self):
        return lambda cos: cos.copy_(curriculum(cos, self.threshold, self.row_t))

    def logit_map_vjp(self, cos, grad):
        return curriculum_slope(cos, self.threshold, self.row_t).mul_(grad)

    def chunkable(self) -> bool:
        return True  # margin_forward is the materialised form of prepare_targets, target_logit and logit_map

    def extra_state(self) -> dict:
        return {"t": self.t.detach().clone()}

    def load_extra_state(self, state: dict) -> None:
        self.t.copy_(state["t"])
