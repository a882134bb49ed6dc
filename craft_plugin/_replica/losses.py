"""arcface_torch's ``CombinedMarginLoss`` semantics (ArcFace and CosFace paths), our code.

ArcFace (m1 = 1, m3 = 0): target logit cos(theta_y + m2); like upstream, the arccos/cos are
applied in place under ``no_grad``, so the gradient is that of the plain cosine.
CosFace (m3 > 0): target logit cos(theta_y) - m3. Every logit is then scaled by s.
Only the B target logits are modified in place; labels -1 mark rows whose class lives elsewhere.
"""
from __future__ import annotations

import torch

from craft_plugin.errors import ConfigError


class CombinedMarginLoss(torch.nn.Module):
    def __init__(self, s: float, m1: float, m2: float, m3: float,
                 interclass_filtering_threshold: float = 0):
        super().__init__()
        if not ((m1 == 1.0 and m3 == 0.0) or m3 > 0):
            raise ConfigError("margin_list", (m1, m2, m3),
                              "(1.0, m2, 0.0) for ArcFace or (1.0, 0.0, m3 > 0) for CosFace")
        self.s, self.m1, self.m2, self.m3 = s, m1, m2, m3
        self.interclass_filtering_threshold = interclass_filtering_threshold

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        rows = torch.nonzero(labels.view(-1) != -1).view(-1)
        cols = labels.view(-1)[rows]
        if self.interclass_filtering_threshold > 0:
            with torch.no_grad():
                keep = (logits <= self.interclass_filtering_threshold).to(logits.dtype)
                keep[rows, cols] = 1.0
            logits = logits * keep
        if self.m1 == 1.0 and self.m3 == 0.0:
            with torch.no_grad():
                target = logits[rows, cols].arccos_() + self.m2
                logits.arccos_()
                logits[rows, cols] = target
                logits.cos_()
        else:
            logits[rows, cols] = logits[rows, cols] - self.m3
        return logits * self.s
