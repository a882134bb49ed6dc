"""Stand-in for arcface_torch's ``PolynomialLRWarmup``, stepped every iteration, with upstream's arithmetic.

Warm-up is closed form, lr(t) = base * t / w for 0 < t <= w; after it the rate is chained, as
upstream computes it: lr(t) = lr(t - 1) * ((1 - (t - w) / (T - w)) / (1 - (t - 1 - w) / (T - w)))^p,
which is base * (1 - (t - w) / (T - w))^p up to rounding (the chained products are what upstream
trains with, so they are kept). lr(0) is the base rate and the rate stays where it is after T.
Unlike upstream it does not pass ``verbose=`` to torch's LRScheduler (torch 2.14 rejects it).
"""
from __future__ import annotations

from typing import List

import torch
from torch.optim.lr_scheduler import LRScheduler


class PolynomialLRWarmup(LRScheduler):
    def __init__(self, optimizer: torch.optim.Optimizer, warmup_iters: int, total_iters: int = 5,
                 power: float = 1.0, last_epoch: int = -1):
        self.warmup_iters = warmup_iters
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch=last_epoch)

    def get_lr(self) -> List[float]:
        t, w, total = self.last_epoch, self.warmup_iters, self.total_iters
        if t == 0 or t > total:
            return [group["lr"] for group in self.optimizer.param_groups]
        if t <= w:
            return [base * t / w for base in self.base_lrs]
        ratio = ((1.0 - (t - w) / (total - w)) / (1.0 - (t - 1 - w) / (total - w))) ** self.power
        return [group["lr"] * ratio for group in self.optimizer.param_groups]
