"""MagFace (Meng, Zhao, Zhou, Yan; CVPR 2021, arXiv 2103.06627): a margin that grows with the
feature magnitude, and a regulariser that rewards large magnitudes for easy samples.

With a_i = ||f_i|| clamped to [l_a, u_a] (with gradient inside the range),

    m(a_i) = (u_m - l_m) / (u_a - l_a) (a_i - l_a) + l_m
    target logit = s cos(theta_y + m(a_i))   where cos theta_y > 0, else s cos theta_y   ("easy margin")
    loss = CE + lambda_g mean_i g(a_i),   g(a) = 1 / a + a / u_a^2

with the true gradient of the target to both the cosine and a_i (through m), and g's gradient
reaching the features. ``easy_margin=False`` replaces the easy-margin branch by ArcFace's: where
theta_y + m > pi, the target is cos theta_y - m sin(pi - m).

Defaults are the authors' released training configuration (github IrvingMeng/MagFace:
run/run_dist.sh ``l_a=10 u_a=110 l_margin=0.45 u_margin=0.8 lambda_g=35 --arc-scale 64``; the
easy margin is MagLinear's default, which the trainer does not override). The paper's text
writes the target as cos(theta_y + m(a_i)) without the easy-margin branch; we follow the code
that produced the released models.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from craft_plugin.errors import ConfigError
from craft_plugin.losses.base import MarginLoss, at_least_float32, theta_of
from craft_plugin.losses.registry import MARGIN_LOSSES
from craft_plugin.validation import boolean, in_range, non_negative, positive


def magface_target(cos: torch.Tensor, margin: torch.Tensor, easy_margin: bool) -> torch.Tensor:
    """cos(theta + margin) with the easy-margin (or ArcFace) branch, elementwise."""
    shifted = torch.cos(theta_of(cos) + margin)
    if easy_margin:
        return torch.where(cos > 0, shifted, cos)
    return torch.where(cos > torch.cos(math.pi - margin), shifted, cos - torch.sin(math.pi - margin) * margin)


@MARGIN_LOSSES.register("magface")
class MagFace(MarginLoss):
    needs_norms = True
    source = "MagFace, arXiv 2103.06627; official config (github IrvingMeng/MagFace run/run_dist.sh)"

    def __init__(self, s: float = 64.0, l_a: float = 10.0, u_a: float = 110.0, l_m: float = 0.45,
                 u_m: float = 0.8, lambda_g: float = 35.0, easy_margin: bool = True):
        super().__init__(s)
        self.l_a = positive("margin_loss.l_a", l_a)
        self.u_a = positive("margin_loss.u_a", u_a)
        if self.u_a <= self.l_a:
            raise ConfigError("margin_loss.u_a", u_a, f"a number > l_a = {l_a}")
        self.l_m = in_range("margin_loss.l_m", l_m, 0.0, math.pi / 2)
        self.u_m = in_range("margin_loss.u_m", u_m, self.l_m, math.pi / 2)
        self.lambda_g = non_negative("margin_loss.lambda_g", lambda_g)
        self.easy_margin = boolean("margin_loss.easy_margin", easy_margin)
        self.row_margins: Optional[torch.Tensor] = None

    def magnitudes(self, norms: torch.Tensor) -> torch.Tensor:
        """a_i = ||f_i|| clamped to [l_a, u_a], (B,), with gradient."""
        return at_least_float32(norms).view(-1).clamp(self.l_a, self.u_a)

    def margins(self, magnitudes: torch.Tensor) -> torch.Tensor:
        return (self.u_m - self.l_m) / (self.u_a - self.l_a) * (magnitudes - self.l_a) + self.l_m

    def margin_forward(self, logits: torch.Tensor, labels: torch.Tensor,
                       norms: Optional[torch.Tensor] = None) -> torch.Tensor:
        if norms is None:
            raise RuntimeError("magface needs the feature norms: the norm-aware Partial FC "
                               "(chosen automatically through the partial_fc_class hook)")
        margin = self.margins(self.magnitudes(norms))
        self.row_margins = margin.detach()  # read by target_logit in this call
        if not margin.requires_grad:
            return super().margin_forward(logits, labels, norms)
        # d target / d a_i enters as a zero-valued term on the B targets that carries only that
        # gradient (the fused path differentiates the target in the cosine alone); a fixed-size
        # gather over every row (label -1: column 0, masked) keeps it free of host syncs
        flat = labels.view(-1)
        every = torch.arange(flat.numel(), device=flat.device)
        cols = flat.clamp(min=0)
        target = at_least_float32(logits[every, cols]).detach()
        out = super().margin_forward(logits, labels, norms)
        carried = magface_target(target, margin, self.easy_margin)
        carried = torch.where(flat != -1, carried - carried.detach(), torch.zeros_like(carried)) * self.s
        return out.index_put_((every, cols), carried.to(out.dtype), accumulate=True)

    def target_logit(self, cos, rows, batch):
        return magface_target(cos, self.row_margins[rows].to(cos.dtype), self.easy_margin)

    def target_logit_given_norms(self, cos, rows, batch, norms):
        return magface_target(cos, self.margins(self.magnitudes(norms))[rows].to(cos.dtype), self.easy_margin)

    def chunkable(self) -> bool:
        return True  # margin_forward is the materialised form of target_logit_given_norms

    def total_loss(self, ce: torch.Tensor, norms: Optional[torch.Tensor], world_size: int) -> torch.Tensor:
        a = self.magnitudes(norms)
        reg = self.lambda_g * (1 / a + a / self.u_a ** 2).mean()
        # every rank holds the same regulariser over the gathered norms; count its gradient once
        return ce + reg.detach() + (reg - reg.detach()) / world_size
