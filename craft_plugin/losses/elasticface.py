"""ElasticFace (Boutros, Damer, Kirchbuchner, Kuijper; CVPRW 2022, arXiv 2109.09416).

Each positive row i draws its own margin m_i ~ N(m, sigma):
ElasticArc: target cos(theta_y + m_i);  ElasticCos: target cos(theta_y) - m_i;  scale s.
The "-plus" ("+") variants sort the drawn margins and give the largest to the hardest sample (smallest
cos theta_y), monotonically, as the paper states (the official code indexes by the sort
permutation instead of its inverse, which is not monotonic).

Rank consistency: the margins of a step are drawn for the whole global batch (B_global values)
from a generator seeded identically on every rank and advanced once per call, so row i gets the
same margin whichever rank owns its class. The generator lives on the logits' device (made at
first use), so drawing and indexing need no host-device sync; its state is checkpointed. For "+",
the ranking needs every row's target cosine: each rank contributes its positive rows' values and
one all-reduce of B floats completes them; the ranking stays on the device.
ElasticArc keeps the true gradient of cos(theta + m_i) (acos clamped to 1 - 1e-6 at +-1).
Defaults are the official configuration: Arc s=64 m=0.5 sigma=0.05, Arc+ sigma=0.0175, Cos
s=64 m=0.35 sigma=0.05, Cos+ sigma=0.02 (the paper's text gives 0.025 for Cos+; we follow the
released config that produced the reported models).
"""
from __future__ import annotations

from typing import Optional

import torch

from craft_plugin.distributed import all_reduce_
from craft_plugin.losses.base import MarginLoss, theta_of
from craft_plugin.losses.registry import MARGIN_LOSSES
from craft_plugin.validation import in_range, non_negative, seed_value

SOURCE = "ElasticFace, arXiv 2109.09416; the official training config"


class ElasticMargin(MarginLoss):
    plus = False
    max_m = 1.0

    def __init__(self, s: float, m: float, sigma: float, seed: int = 0):
        super().__init__(s)
        self.m = in_range("margin_loss.m", m, 0.0, self.max_m)
        self.sigma = non_negative("margin_loss.sigma", sigma)
        self.seed = seed_value("margin_loss.seed", seed)
        self.generator: Optional[torch.Generator] = None  # made on the logits' device at first use
        self.restored_state: Optional[torch.Tensor] = None  # from a checkpoint, until then

    def generator_on(self, device: torch.device) -> torch.Generator:
        """The margin generator, on ``device`` (the same seed on every rank)."""
        if self.generator is None:
            self.generator = torch.Generator(device=device).manual_seed(self.seed)
            if self.restored_state is not None:
                self.generator.set_state(self.restored_state)
                self.restored_state = None
        return self.generator

    def margins(self, cos: torch.Tensor, rows: torch.Tensor, batch: int) -> torch.Tensor:
        """Margins of the positive ``rows``: one draw per global row, sorted for "+"."""
        generator = self.generator_on(cos.device)
        draws = torch.normal(self.m, self.sigma, (batch,), generator=generator, device=cos.device)
        if self.plus:
            target = torch.zeros(batch, dtype=torch.float32, device=cos.device)
            target[rows] = cos.detach().float()
            order = torch.argsort(all_reduce_(target), stable=True)  # hardest (smallest cos) first
            ranked = torch.empty_like(draws)
            ranked[order] = torch.sort(draws, descending=True).values
            draws = ranked
        return draws[rows].to(cos.dtype)

    def extra_state(self) -> dict:
        """``{"generator": state}``; None before the first draw (then the seed is the state: the
        generator's device, hence its state's format, is not known yet)."""
        if self.generator is None:
            return {"generator": None if self.restored_state is None else self.restored_state.clone()}
        return {"generator": self.generator.get_state()}

    def load_extra_state(self, state: dict) -> None:
        """Replays from ``state``: None (or ``{}``, a checkpoint saved before the first draw by an
        older craft-plugin) starts again from the seed, also in a loss that has drawn since."""
        saved = state.get("generator")
        if saved is None:
            self.generator = self.restored_state = None  # re-seeded at the next draw
        elif self.generator is None:
            self.restored_state = saved.clone()
        else:
            self.generator.set_state(saved)


class ElasticArc(ElasticMargin):
    max_m = 3.14159

    def target_logit(self, cos, rows, batch):
        return torch.cos(theta_of(cos) + self.margins(cos, rows, batch))


class ElasticCos(ElasticMargin):
    def target_logit(self, cos, rows, batch):
        return cos - self.margins(cos, rows, batch)


@MARGIN_LOSSES.register("elasticface-arc")
class ElasticArcFace(ElasticArc):
    source = f"{SOURCE} (ElasticArcFace)"

    def __init__(self, s: float = 64.0, m: float = 0.5, sigma: float = 0.05, seed: int = 0):
        super().__init__(s, m, sigma, seed)


@MARGIN_LOSSES.register("elasticface-arc-plus")
class ElasticArcFacePlus(ElasticArc):
    source = f"{SOURCE} (ElasticArcFacePlus)"
    plus = True

    def __init__(self, s: float = 64.0, m: float = 0.5, sigma: float = 0.0175, seed: int = 0):
        super().__init__(s, m, sigma, seed)


@MARGIN_LOSSES.register("elasticface-cos")
class ElasticCosFace(ElasticCos):
    source = f"{SOURCE} (ElasticCosFace)"

    def __init__(self, s: float = 64.0, m: float = 0.35, sigma: float = 0.05, seed: int = 0):
        super().__init__(s, m, sigma, seed)


@MARGIN_LOSSES.register("elasticface-cos-plus")
class ElasticCosFacePlus(ElasticCos):
    source = f"{SOURCE} (ElasticCosFacePlus; the paper's text gives sigma=0.025)"
    plus = True

    def __init__(self, s: float = 64.0, m: float = 0.35, sigma: float = 0.02, seed: int = 0):
        super().__init__(s, m, sigma, seed)
