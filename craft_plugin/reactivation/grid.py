"""A picture of a first-layer filter bank: one tile per filter, on one shared scale.

Tiles share the scale max |w| over the whole layer (mid-grey = 0), so an inactive filter shows as
a flat grey tile. Filters with 3 input channels are drawn as RGB, others as their channel mean.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def filter_grid(weight: torch.Tensor, tile: int = 12, pad: int = 2) -> np.ndarray:
    """RGB uint8 HWC image of the filters of ``weight`` (out, in, kh, kw)."""
    w = weight.detach().float().cpu()
    if w.size(1) != 3:
        w = w.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    scale = float(w.abs().max()) or 1.0
    tiles = ((w / scale) * 0.5 + 0.5).clamp(0, 1)
    tiles = torch.nn.functional.interpolate(tiles, size=(tile, tile), mode="nearest")
    count = tiles.size(0)
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    canvas = np.full((rows * (tile + pad) + pad, cols * (tile + pad) + pad, 3), 255, np.uint8)
    for i in range(count):
        r, c = divmod(i, cols)
        y, x = pad + r * (tile + pad), pad + c * (tile + pad)
        canvas[y:y + tile, x:x + tile] = (tiles[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return canvas
