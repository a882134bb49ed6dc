"""Per-channel mean |output| of one module, measured only while armed (the ``activation`` criterion).

:meth:`ActivationCapture.arm` registers a forward hook on the module; every training-mode forward
until :meth:`ActivationCapture.take` adds a_c = mean over (batch, positions) of |y_c| to a running
sum on the output's device (no host sync); ``take`` removes the hook and returns the mean over
the captured forwards (several with gradient accumulation). Between checks no hook is
registered, so the model runs exactly as without the plugin. Eval-mode forwards (verification
during training) are not counted.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn


class ActivationCapture:
    def __init__(self, module: nn.Module):
        self.module = module
        self.handle: Any = None
        self.total: Optional[torch.Tensor] = None
        self.forwards = 0

    @property
    def armed(self) -> bool:
        return self.handle is not None

    def arm(self) -> None:
        if self.handle is None:
            self.total, self.forwards = None, 0
            self.handle = self.module.register_forward_hook(self.record)

    def record(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if not module.training:
            return
        dims = [d for d in range(output.dim()) if d != 1]
        stat = output.detach().abs().float().mean(dim=dims)
        self.total = stat if self.total is None else self.total + stat
        self.forwards += 1

    def take(self) -> Optional[torch.Tensor]:
        """Disarm; the per-channel mean over the captured forwards, or ``None`` if none ran."""
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
        if not self.forwards:
            return None
        mean = self.total / self.forwards
        self.total, self.forwards = None, 0
        return mean
