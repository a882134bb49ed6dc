"""AdaFace (Kim, Jain, Liu; CVPR 2022, arXiv 2204.00964): a margin adapted to image quality,
with the feature norm as the quality proxy.

With ||z_i|| the feature norm clipped to [0.001, 100] and detached, mu and sigma exponential
moving averages of the batch mean and (unbiased) standard deviation of those norms,

    z_hat_i = clip(h (||z_i|| - mu) / (sigma + eps), -1, 1)
    g_angle_i = -m z_hat_i,   g_add_i = m z_hat_i + m
    target logit = s (cos(clip(theta_y + g_angle_i, eps, pi - eps)) - g_add_i),  eps = 1e-3

and every other logit s cos theta_j. The averages are updated with the current batch before use:
mu <- t_alpha mean + (1 - t_alpha) mu (likewise sigma), starting from mu = 20, sigma = 100.
The target keeps its true gradient through acos/cos; the norms get none (detached, as the
official head).

Defaults are the authors' released training configuration (github mk-minchul/AdaFace: the
run scripts' ``--m 0.4 --h 0.333``, ``--s 64`` and ``--t_alpha 0.01`` of config.py; eps, the norm
clip and the initial averages of head.py). Statistics are over the GLOBAL batch (every rank holds
all gathered norms, so every rank has the same averages); the official head, run with DDP,
averaged each GPU's own batch.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from craft_plugin.losses.base import MarginLoss, at_least_float32
from craft_plugin.losses.moving_average import momentum, update_
from craft_plugin.losses.registry import MARGIN_LOSSES
from craft_plugin.validation import in_range, non_negative

EPS = 1e-3  # the official head's: cosine clamp, angle clip and sigma offset
NORM_CLIP = (1e-3, 100.0)
INITIAL_MEAN, INITIAL_STD = 20.0, 100.0


@MARGIN_LOSSES.register("adaface")
class AdaFace(MarginLoss):
    needs_norms = True
    source = "AdaFace, arXiv 2204.00964; official config (github mk-minchul/AdaFace)"

    def __init__(self, s: float = 64.0, m: float = 0.4, h: float = 0.333, t_alpha: float = 0.01):
        super().__init__(s)
        self.m = in_range("margin_loss.m", m, 0.0, 1.5)
        self.h = non_negative("margin_loss.h", h)
        self.t_alpha = momentum("margin_loss.t_alpha", t_alpha)
        # not in Partial FC's state_dict (its keys stay upstream's); checkpointed via extra_state
        self.register_buffer("batch_mean", torch.tensor(INITIAL_MEAN), persistent=False)
        self.register_buffer("batch_std", torch.tensor(INITIAL_STD), persistent=False)
        self.margin_scaler: Optional[torch.Tensor] = None

    def update_statistics(self, norms: torch.Tensor) -> torch.Tensor:
        """Updates the moving averages with this global batch; returns z_hat (B,), detached."""
        if norms.numel() < 2:
            raise ValueError(f"adaface needs a global batch of at least 2 rows for the norms' "
                             f"standard deviation, got {norms.numel()}")
        with torch.no_grad():
            safe = at_least_float32(norms).detach().view(-1).clamp(*NORM_CLIP)
            mean, std = safe.mean(), safe.std()
            update_(self.batch_mean, mean, self.t_alpha)
            update_(self.batch_std, std, self.t_alpha)
            return ((safe - self.batch_mean) / (self.batch_std + EPS) * self.h).clamp(-1, 1)

    def prepare(self, norms: Optional[torch.Tensor]) -> None:
        if norms is None:
            raise RuntimeError("adaface needs the feature norms: the norm-aware Partial FC "
                               "(chosen automatically through the partial_fc_class hook)")
        self.margin_scaler = self.update_statistics(norms)  # read by target_logit in this forward

    def target_logit(self, cos, rows, batch):
        scaler = self.margin_scaler[rows].to(cos.dtype)
        theta = torch.acos(cos.clamp(-1 + EPS, 1 - EPS))
        return torch.cos((theta - self.m * scaler).clamp(EPS, math.pi - EPS)) - (self.m * scaler + self.m)

    def extra_state(self) -> dict:
        return {"batch_mean": self.batch_mean.detach().clone(), "batch_std": self.batch_std.detach().clone()}

    def load_extra_state(self, state: dict) -> None:
        self.batch_mean.copy_(state["batch_mean"])
        self.batch_std.copy_(state["batch_std"])
