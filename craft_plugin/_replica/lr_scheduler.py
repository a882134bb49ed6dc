"""The learning-rate schedule of arcface_torch's ``PolynomialLRWarmup`` in closed form.

lr(t) = base * t / w for 0 < t <= w (linear warm-up), else base * (1 - (min(t, T) - w) / (T - w))^p;
like upstream, lr(0) = base (its first iteration runs at the base rate). Stepped every iteration. Unlike upstream it does not pass ``verbose=`` to torch's LRScheduler
(torch 2.14 rejects it).
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
        t = self.last_epoch
        if t == 0:
            return list(self.base_lrs)
        if t <= self.warmup_iters:
            return [base * t / self.warmup_iters for base in self.base_lrs]
        frac = (min(self.total_iters, t) - self.warmup_iters) / max(1, self.total_iters - self.warmup_iters)
        return [base * (1.0 - frac) ** self.power for base in self.base_lrs]
