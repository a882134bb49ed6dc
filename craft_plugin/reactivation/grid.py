"""A picture of a first-layer filter bank: one numbered tile per filter, on one shared scale.

Tiles share the scale max |w| over the whole layer (mid-grey = 0), so an inactive filter shows as
a flat grey tile; the filters given as inactive are also outlined in red, and a legend under the
grid says so. Filters with 3 input channels are drawn as RGB, others as their channel mean. The
image is at least ``min_width`` pixels wide (tiles upscaled, nearest neighbour).
"""
from __future__ import annotations

import math
from typing import Iterable

import cv2
import numpy as np
import torch

PAD = 6                      # between tiles; the outline is drawn inside it
LABEL = 16                   # height of the number strip under each tile
LEGEND = 44                  # height of the legend under the grid
OUTLINE = (220, 30, 30)      # RGB of an inactive filter's outline
FONT = cv2.FONT_HERSHEY_SIMPLEX


def text(canvas: np.ndarray, words: str, x: int, y: int, scale: float) -> None:
    cv2.putText(canvas, words, (x, y), FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)


def filter_grid(weight: torch.Tensor, inactive: Iterable[int] = (), min_width: int = 512) -> np.ndarray:
    """RGB uint8 HWC image of the filters of ``weight`` (out, in, kh, kw), ``inactive`` outlined."""
    w = weight.detach().float().cpu()
    if w.size(1) != 3:
        w = w.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    scale = float(w.abs().max()) or 1.0
    count = w.size(0)
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    tile = max(w.size(-1), math.ceil((min_width - PAD) / cols) - PAD)
    tiles = ((w / scale) * 0.5 + 0.5).clamp(0, 1)
    tiles = torch.nn.functional.interpolate(tiles, size=(tile, tile), mode="nearest")
    tiles = (tiles.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    cell_w, cell_h = tile + PAD, tile + LABEL + PAD
    canvas = np.full((rows * cell_h + PAD + LEGEND, cols * cell_w + PAD, 3), 255, np.uint8)
    dead = set(int(i) for i in inactive)
    for i in range(count):
        r, c = divmod(i, cols)
        y, x = PAD + r * cell_h, PAD + c * cell_w
        canvas[y:y + tile, x:x + tile] = tiles[i]
        if i in dead:
            cv2.rectangle(canvas, (x - 3, y - 3), (x + tile + 2, y + tile + 2), OUTLINE, 2)
        text(canvas, str(i), x + 1, y + tile + LABEL - 4, 0.4)
    top = rows * cell_h + PAD
    cv2.rectangle(canvas, (PAD, top + 6), (PAD + 14, top + 20), OUTLINE, 2)
    text(canvas, f"inactive ({len(dead)} of {count}); tile i = filter i", PAD + 22, top + 18, 0.45)
    text(canvas, f"one scale for all tiles: grey = 0, extremes = +-{scale:.3g} (max |w|)", PAD, top + 38, 0.45)
    return canvas
