"""ArcFace (Deng, Guo, Xue, Zafeiriou; CVPR 2019, arXiv 1801.07698) through our margin contract.

Target logit s * cos(theta_y + m); s=64, m=0.5 as in arcface_torch's configs (margin_list
(1.0, 0.5, 0.0)). Like upstream's CombinedMarginLoss the margin carries no gradient
(straight-through: the gradient is that of s * cos theta).
"""
from __future__ import annotations

import torch

from craft_plugin.losses.base import MarginLoss, theta_of
from craft_plugin.losses.registry import MARGIN_LOSSES
from craft_plugin.validation import in_range


@MARGIN_LOSSES.register("arcface")
class ArcFace(MarginLoss):
    source = "ArcFace, arXiv 1801.07698; defaults as arcface_torch's configs (margin_list (1.0, 0.5, 0.0))"

    def __init__(self, s: float = 64.0, m: float = 0.5):
        super().__init__(s)
        self.m = in_range("margin_loss.m", m, 0.0, 3.14159)

    def upstream_margin_list(self):
        return (1.0, self.m, 0.0)

    def target_logit(self, cos, rows, batch):
        with torch.no_grad():
            shifted = torch.cos(theta_of(cos) + self.m)
        return cos + (shifted - cos).detach()
