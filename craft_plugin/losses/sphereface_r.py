"""SphereFace-R (Liu, Wen, Raj, Singh, Weller; TPAMI 2022, arXiv 2109.05565).

Multiplicative angular margin m on the target angle, with the paper's magnitude types:
  v0: psi(theta) = (-1)^k cos(m theta) - 2k,  k = floor(m theta / pi)   (target only)
  v1: psi(theta) = cos(min(m theta, pi))                                  (target only)
  v2: target keeps cos theta_y; every non-target logit becomes cos(theta_j / m)
Characteristic gradient detachment (default ``detach=True``): the forward value is psi but the
gradient is that of cos theta, i.e. logit = cos + (psi - cos).detach().
Feature normalisation (``norm``):
  hard: logits = s * (...);           loss = lw * CE / s
  none: logits = ||x|| * (...);       loss = lw * CE
  soft: logits = ||x|| * (...);       loss = lw * CE / s + t * mean_i | ||x_i|| - s |
Margin schedule: m_eff = m + dm * (number of entries of ``steps`` already passed), counted in
real optimizer steps. Defaults: s=30, m=1.5, t=0.01 (the authors' OpenSphere settings); lw per norm
as OpenSphere's heads (ydwen/opensphere, model/head/spherefacer.py: SphereFaceR_H and SphereFaceR_S
lw=50, SphereFaceR_N lw=1), see ``LW_DEFAULTS``. OpenSphere's "none"/"soft" heads start at m=1 and
grow it by dm at each of ``steps``; with no steps that is no margin at all, so we keep m=1.5, dm=0 and
no steps (a fixed margin) as defaults for every norm.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

from craft_plugin.errors import ConfigError
from craft_plugin.losses.base import COS_EPS, MarginLoss, at_least_float32, target_positions, theta_of
from craft_plugin.losses.registry import MARGIN_LOSSES
from craft_plugin.validation import boolean, in_range, integer, non_negative, one_of, positive

MAGNITUDES = ("v0", "v1", "v2")
NORMS = ("hard", "none", "soft")
# the loss weight when margin_loss.lw is not given: "none" leaves the CE unscaled by 1/s, so a weight
# of 50 would make it 50x the hard loss (OpenSphere's SphereFaceR_N uses 1)
LW_DEFAULTS = {"hard": 50.0, "none": 1.0, "soft": 50.0}


def psi(theta: torch.Tensor, m: float, magnitude: str) -> torch.Tensor:
    """The target logit before scaling, for magnitude types v0 and v1."""
    m_theta = m * theta
    if magnitude == "v0":
        k = torch.floor(m_theta / math.pi)
        return (1 - 2 * torch.remainder(k, 2)) * torch.cos(m_theta) - 2 * k
    return torch.cos(m_theta.clamp(max=math.pi))


@MARGIN_LOSSES.register("sphereface-r")
class SphereFaceR(MarginLoss):
    source = ("SphereFace-R, arXiv 2109.05565; hard feature normalisation, v0, s, m, lw and t as the authors' "
              "OpenSphere config")
    defaults_by = {"lw": ("norm", LW_DEFAULTS)}

    def __init__(self, s: float = 30.0, m: float = 1.5, magnitude: str = "v0", norm: str = "hard",
                 detach: bool = True, lw: Optional[float] = None, t: float = 0.01, dm: float = 0.0,
                 steps: Sequence[int] = ()):
        super().__init__(s)
        if not isinstance(steps, (list, tuple)):
            raise ConfigError("margin_loss.steps", steps, "a list of step numbers >= 0")
        self.m = in_range("margin_loss.m", m, 1.0, 10.0)
        self.magnitude = one_of("margin_loss.magnitude", magnitude, MAGNITUDES)
        self.norm = one_of("margin_loss.norm", norm, NORMS)
        self.detach = boolean("margin_loss.detach", detach)
        self.lw = positive("margin_loss.lw", self.defaults_by["lw"][1][self.norm] if lw is None else lw)
        self.t = non_negative("margin_loss.t", t)
        self.dm = non_negative("margin_loss.dm", dm)
        self.steps = sorted(integer(f"margin_loss.steps[{i}]", x, 0) for i, x in enumerate(steps))
        self.step = 0
        self.needs_norms = norm != "hard"

    def current_m(self) -> float:
        return self.m + self.dm * sum(1 for s in self.steps if s < self.step)

    def on_step(self) -> None:
        self.step += 1

    def shaped(self, cos: torch.Tensor, value_fn) -> torch.Tensor:
        if self.detach:
            with torch.no_grad():
                value = value_fn(theta_of(cos))
            return cos + (value - cos).detach()
        return value_fn(theta_of(cos))

    def target_logit(self, cos, rows, batch):
        if self.magnitude == "v2":
            return cos
        m = self.current_m()
        return self.shaped(cos, lambda theta: psi(theta, m, self.magnitude))

    def fused(self) -> bool:
        # v2 maps every logit: fused only with a straight-through gradient and one scale s
        return self.magnitude != "v2" or (self.detach and self.norm == "hard")

    def logit_map(self):
        if self.magnitude != "v2":
            return None
        m = self.current_m()
        return lambda logits: logits.clamp_(-1 + COS_EPS, 1 - COS_EPS).acos_().div_(m).cos_()

    def chunkable(self) -> bool:
        return True  # margin_forward only adds the plain-autograd form of the same targets, map and scale

    def logit_map_vjp(self, cos, grad):
        if self.detach:
            return grad
        m = self.current_m()
        with torch.enable_grad():
            leaf = cos.detach().requires_grad_(True)
            return torch.autograd.grad(self.shaped(leaf, lambda theta: torch.cos(theta / m)), leaf, grad)[0]

    def margin_forward(self, logits, labels, norms=None):
        if not self.fused():
            m = self.current_m()
            rows, cols = target_positions(labels)
            target = at_least_float32(logits[rows, cols])
            logits = self.shaped(at_least_float32(logits), lambda theta: torch.cos(theta / m))
            logits[rows, cols] = target
            return self.scaled(logits, norms)
        return super().margin_forward(logits, labels, norms)

    def scale_factor(self, norms: Optional[torch.Tensor]) -> Union[float, torch.Tensor]:
        if self.norm == "hard":
            return self.s
        if norms is None:
            raise RuntimeError('margin_loss.norm = "none"/"soft" needs the norm-aware Partial FC '
                               "(chosen automatically through the partial_fc_class hook)")
        return norms

    def total_loss(self, ce: torch.Tensor, norms: Optional[torch.Tensor], world_size: int) -> torch.Tensor:
        loss = self.lw * ce if self.norm == "none" else self.lw * ce / self.s
        if self.norm == "soft":
            reg = self.t * (norms.view(-1) - self.s).abs().mean()
            # every rank holds the same regulariser; count its gradient once across ranks
            loss = loss + reg.detach() + (reg - reg.detach()) / world_size
        return loss

    def extra_state(self) -> dict:
        return {"step": self.step}

    def load_extra_state(self, state: dict) -> None:
        self.step = int(state["step"])
