"""ElasticFace (Boutros, Damer, Kirchbuchner, Kuijper; CVPRW 2022, arXiv 2109.09416).

Each positive row i draws its own margin m_i ~ N(m, sigma):
ElasticArc: target cos(theta_y + m_i);  ElasticCos: target cos(theta_y) - m_i;  scale s.
The "-plus" ("+") variants sort the drawn margins and give the largest to the hardest sample (smallest
cos theta_y), monotonically, as the paper states (the official code indexes by the sort
permutation instead of its inverse, which is not monotonic).

Rank consistency: the margins of a step are drawn for the whole global batch (B_global values)
from a generator seeded identically on every rank and advanced once per call, so row i gets the
same margin whichever rank owns its class. For "+", the ranking needs every row's target cosine:
each rank contributes its positive rows' values and one all-reduce of B floats completes them.
ElasticArc keeps the true gradient of cos(theta + m_i) (acos clamped to 1 - 1e-6 at +-1).
Defaults are the official configuration: Arc s=64 m=0.5 sigma=0.05, Arc+ sigma=0.0175, Cos
s=64 m=0.35 sigma=0.05, Cos+ sigma=0.02 (the paper's text gives 0.025 for Cos+; we follow the
released config that produced the reported models).
"""
from __future__ import annotations

import torch

from craft_plugin.distributed import all_reduce_
from craft_plugin.losses.base import MarginLoss, in_range, non_negative, theta_of
from craft_plugin.losses.registry import MARGIN_LOSSES


class ElasticMargin(MarginLoss):
    plus = False
    max_m = 1.0

    def __init__(self, s: float, m: float, sigma: float, seed: int = 0):
        super().__init__(s)
        self.m = in_range("margin_loss.m", m, 0.0, self.max_m)
        self.sigma = non_negative("margin_loss.sigma", sigma)
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def margins(self, cos: torch.Tensor, rows: torch.Tensor, batch: int) -> torch.Tensor:
        """Margins of the positive ``rows``: one draw per global row, sorted for "+"."""
        draws = torch.normal(self.m, self.sigma, (batch,), generator=self.generator)
        if self.plus:
            target = torch.zeros(batch, dtype=torch.float32, device=cos.device)
            target[rows] = cos.detach().float()
            order = torch.argsort(all_reduce_(target).cpu(), stable=True)  # hardest (smallest cos) first
            ranked = torch.empty_like(draws)
            ranked[order] = torch.sort(draws, descending=True).values
            draws = ranked
        return draws[rows.cpu()].to(device=cos.device, dtype=cos.dtype)

    def extra_state(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_extra_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class ElasticArc(ElasticMargin):
    max_m = 3.14159

    def target_logit(self, cos, rows, batch):
        return torch.cos(theta_of(cos) + self.margins(cos, rows, batch))


class ElasticCos(ElasticMargin):
    def target_logit(self, cos, rows, batch):
        return cos - self.margins(cos, rows, batch)


@MARGIN_LOSSES.register("elasticface-arc")
class ElasticArcFace(ElasticArc):
    def __init__(self, s: float = 64.0, m: float = 0.5, sigma: float = 0.05, seed: int = 0):
        super().__init__(s, m, sigma, seed)


@MARGIN_LOSSES.register("elasticface-arc-plus")
class ElasticArcFacePlus(ElasticArc):
    plus = True

    def __init__(self, s: float = 64.0, m: float = 0.5, sigma: float = 0.0175, seed: int = 0):
        super().__init__(s, m, sigma, seed)


@MARGIN_LOSSES.register("elasticface-cos")
class ElasticCosFace(ElasticCos):
    def __init__(self, s: float = 64.0, m: float = 0.35, sigma: float = 0.05, seed: int = 0):
        super().__init__(s, m, sigma, seed)


@MARGIN_LOSSES.register("elasticface-cos-plus")
class ElasticCosFacePlus(ElasticCos):
    plus = True

    def __init__(self, s: float = 64.0, m: float = 0.35, sigma: float = 0.02, seed: int = 0):
        super().__init__(s, m, sigma, seed)
