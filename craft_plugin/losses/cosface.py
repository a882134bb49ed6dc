"""CosFace (Wang et al.; CVPR 2018, arXiv 1801.09414) through our margin contract.

Target logit s * (cos theta_y - m); s=64, m=0.4 as in arcface_torch's configs (margin_list
(1.0, 0.0, 0.4)).
"""
from __future__ import annotations

from craft_plugin.losses.base import MarginLoss
from craft_plugin.losses.registry import MARGIN_LOSSES
from craft_plugin.validation import in_range


@MARGIN_LOSSES.register("cosface")
class CosFace(MarginLoss):
    source = "CosFace, arXiv 1801.09414; defaults as arcface_torch's configs (margin_list (1.0, 0.0, 0.4))"

    def __init__(self, s: float = 64.0, m: float = 0.4):
        super().__init__(s)
        self.m = in_range("margin_loss.m", m, 0.0, 2.0)

    def upstream_margin_list(self):
        return (1.0, 0.0, self.m)

    def target_logit(self, cos, rows, batch):
        return cos - self.m
