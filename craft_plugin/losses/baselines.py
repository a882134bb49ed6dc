"""ArcFace and CosFace through the same contract, for comparison presets.

ArcFace (Deng et al., CVPR 2019, arXiv 1801.07698): target cos(theta_y + m), scale s (s=64,
m=0.5 in arcface_torch's configs). Like upstream's CombinedMarginLoss the margin is applied
without gradient (straight-through: the gradient is that of s * cos theta).
CosFace (Wang et al., CVPR 2018, arXiv 1801.09414): target cos(theta_y) - m (s=64, m=0.4).
"""
from __future__ import annotations

import torch

from craft_plugin.losses.base import MarginLoss, in_range, theta_of
from craft_plugin.losses.registry import MARGIN_LOSSES


@MARGIN_LOSSES.register("arcface")
class ArcFace(MarginLoss):
    def __init__(self, s: float = 64.0, m: float = 0.5):
        super().__init__(s)
        self.m = in_range("margin_loss.m", m, 0.0, 3.14159)

    def target_logit(self, cos, rows, batch):
        with torch.no_grad():
            shifted = torch.cos(theta_of(cos) + self.m)
        return cos + (shifted - cos).detach()


@MARGIN_LOSSES.register("cosface")
class CosFace(MarginLoss):
    def __init__(self, s: float = 64.0, m: float = 0.4):
        super().__init__(s)
        self.m = in_range("margin_loss.m", m, 0.0, 2.0)

    def target_logit(self, cos, rows, batch):
        return cos - self.m
