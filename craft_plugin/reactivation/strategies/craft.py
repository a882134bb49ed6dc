"""``craft`` (our reading of CRAFT, arXiv 2312.00072): new filters from the strong ones.

Each revived filter is a random signed convex combination of ``parents`` distinct strong filters
plus a Gaussian perturbation of relative size ``noise``, rescaled to the median norm of the strong
filters:  w = r * (v / ||v||),  v = sum_j s_j a_j w_{p_j} + noise * ||u|| * e / ||e||,
u = sum_j s_j a_j w_{p_j}, a ~ Dirichlet(1), s_j = +-1, e ~ N(0, I), r = median_j ||w_j|| (strong j).

Why: the paper re-initialises "based on the context of strong filters at that stage in
training". Combinations of the learned filters stay in the subspace of colour/edge detectors the
network has found useful, the random coefficients, signs and perturbation make each new filter a
new direction rather than a duplicate (a duplicate would receive the same gradient as its parent
and add nothing), and the median strong norm puts it where live filters sit, so the learning
rate and weight decay act on it as on its peers.
"""
from __future__ import annotations

import torch

from craft_plugin.reactivation.strategies import STRATEGIES


@STRATEGIES.register("craft")
def craft(weight: torch.Tensor, strong: torch.Tensor, count: int, generator: torch.Generator,
          options) -> torch.Tensor:
    flat = weight[strong].flatten(1)
    parents = min(options.parents, len(strong))
    target = flat.norm(dim=1).median()
    picks = torch.rand(count, len(strong), generator=generator).topk(parents, dim=1).indices
    mix = -torch.log(torch.rand(count, parents, generator=generator).clamp_min(1e-12))  # Dirichlet(1)
    mix = mix / mix.sum(dim=1, keepdim=True)
    signs = torch.randint(0, 2, (count, parents), generator=generator) * 2.0 - 1.0
    combo = torch.bmm((signs * mix).unsqueeze(1), flat[picks]).squeeze(1)
    noise = torch.randn(count, flat.size(1), generator=generator)
    combo = combo + options.noise * combo.norm(dim=1, keepdim=True) * noise / noise.norm(dim=1, keepdim=True)
    out = combo * (target / combo.norm(dim=1, keepdim=True).clamp_min(1e-12))
    return out.view(count, *weight.shape[1:])
