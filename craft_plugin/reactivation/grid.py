"""A picture of first-layer filter banks: one numbered tile per filter, one colour scale.

Each panel has a title (which model or run, which layer, which step), one tile per filter with
its index under it, and a caption with its counts. Tiles map a weight w to the colour
w / s * 0.5 + 0.5 on the scale s = max |w| over **every panel of the picture**, so mid-grey is 0,
an inactive filter is a flat grey tile, and panels side by side (:func:`compare_grids`) can be
compared by eye. A filter with 3 input channels is drawn with its weights on input channels 0, 1,
2 as red, green and blue (the R, G, B of an arcface_torch RGB image); other layers are drawn as
their channel mean in grey. Filters given as inactive are outlined in red; filters CRAFT revived
are outlined in blue with the step of their last revival under the tile. The legend under the
panels explains only the marks that are drawn. Each panel is at least ``min_width`` pixels wide
(tiles upscaled, nearest neighbour).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Sequence

import cv2
import numpy as np
import torch

PAD = 6                      # between tiles; the outlines are drawn inside it
LABEL = 16                   # height of the number strip under each tile
TITLE = 28                   # height of a panel's title strip
LINE = 20                    # height of a caption or legend line
GAP = 24                     # between two panels
OUTLINE = (220, 30, 30)      # RGB outline of an inactive filter
REVIVED = (30, 90, 230)      # RGB outline of a revived filter, and its revival step
FONT = cv2.FONT_HERSHEY_SIMPLEX
SMALL, TINY, BODY, HEAD = 0.4, 0.35, 0.45, 0.5   # font scales: tile number, revival step, caption and legend, title


@dataclass
class Panel:
    """One filter bank: ``weight`` (out, in, kh, kw), ``title``, the ``inactive`` filter indices, and
    ``revived``: filter index -> the steps at which CRAFT revived it (in order)."""

    weight: torch.Tensor
    title: str
    inactive: Iterable[int] = ()
    revived: Mapping[int, Sequence[int]] = field(default_factory=dict)


def text(canvas: np.ndarray, words: str, x: int, y: int, scale: float, colour=(0, 0, 0)) -> None:
    cv2.putText(canvas, words, (x, y), FONT, scale, colour, 1, cv2.LINE_AA)


def text_width(words: str, scale: float) -> int:
    return cv2.getTextSize(words, FONT, scale, 1)[0][0]


def wrap(words: str, width: int, scale: float) -> List[str]:
    """``words`` broken into lines no wider than ``width`` pixels, and at each newline (a longer
    single word stays whole)."""
    lines: List[str] = []
    for paragraph in words.split("\n"):
        start = len(lines)
        for word in paragraph.split():
            if len(lines) > start and text_width(lines[-1] + " " + word, scale) <= width:
                lines[-1] += " " + word
            else:
                lines.append(word)
    return lines


def revival_label(steps: Sequence[int]) -> str:
    """``@350`` for one revival at step 350, ``2x@350`` when 350 was the last of two."""
    return f"@{steps[-1]}" if len(steps) == 1 else f"{len(steps)}x@{steps[-1]}"


def caption(panel: Panel, count: int) -> str:
    revivals = sum(len(s) for s in panel.revived.values())
    words = f"{len(set(panel.inactive))} of {count} filters inactive"
    if revivals:
        words += (f"; {revivals} revival{'s' * (revivals != 1)} of {len(panel.revived)} "
                  f"filter{'s' * (len(panel.revived) != 1)} during training")
    return words


def geometry(count: int, size: int, min_width: int) -> tuple:
    """``(cols, rows, tile)`` of a grid of ``count`` tiles of at least ``size`` pixels."""
    cols = math.ceil(math.sqrt(count))
    return cols, math.ceil(count / cols), max(size, math.ceil((min_width - PAD) / cols) - PAD)


def panel_width(panel: Panel, min_width: int) -> int:
    cols, _, tile = geometry(panel.weight.size(0), panel.weight.size(-1), min_width)
    return cols * (tile + PAD) + PAD


def _panel(panel: Panel, scale: float, min_width: int, title_lines: int) -> np.ndarray:
    w = panel.weight.detach().float().cpu()
    if w.size(1) != 3:
        w = w.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    count = w.size(0)
    cols, rows, tile = geometry(count, w.size(-1), min_width)
    tiles = ((w / scale) * 0.5 + 0.5).clamp(0, 1)
    tiles = torch.nn.functional.interpolate(tiles, size=(tile, tile), mode="nearest")
    tiles = (tiles.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    cell_w, cell_h = tile + PAD, tile + LABEL + PAD
    width = cols * cell_w + PAD
    lines = wrap(caption(panel, count), width - 2 * PAD, BODY)
    head = TITLE * title_lines
    canvas = np.full((head + rows * cell_h + PAD + LINE * len(lines), width, 3), 255, np.uint8)
    for k, line in enumerate(wrap(panel.title, width - 2 * PAD, HEAD)):
        text(canvas, line, PAD, TITLE * (k + 1) - 9, HEAD)
    dead = set(int(i) for i in panel.inactive)
    for i in range(count):
        r, c = divmod(i, cols)
        y, x = head + PAD + r * cell_h, PAD + c * cell_w
        canvas[y:y + tile, x:x + tile] = tiles[i]
        colour = OUTLINE if i in dead else REVIVED if i in panel.revived else None
        if colour is not None:
            cv2.rectangle(canvas, (x - 3, y - 3), (x + tile + 2, y + tile + 2), colour, 2)
        text(canvas, str(i), x + 1, y + tile + LABEL - 4, SMALL)
        if i in panel.revived:
            label = revival_label(panel.revived[i])
            text(canvas, label, x + tile - text_width(label, TINY) + 2, y + tile + LABEL - 4, TINY, REVIVED)
    top = head + rows * cell_h + PAD
    for k, line in enumerate(lines):
        text(canvas, line, PAD, top + LINE * k + 14, BODY)
    return canvas


def legend(panels: Sequence[Panel], scale: float, width: int, rule: str) -> np.ndarray:
    """The lines under the panels: a mark's entry only when some panel draws that mark."""
    entries: List[tuple] = []   # (outline colour or None, words)
    if any(set(p.inactive) for p in panels):
        entries.append((OUTLINE, f"red outline: {rule}" if rule else "red outline: an inactive filter"))
    revived = [steps for p in panels for steps in p.revived.values()]
    if revived:
        several = " (Nx@S: revived N times, last at step S)" if any(len(s) > 1 for s in revived) else ""
        entries.append((REVIVED, f"blue outline, @S under the tile: revived by CRAFT at step S{several}"))
    channels = panels[0].weight.size(1)
    entries.append((None, "tile i = filter i; each of its cells is one kernel position, coloured by the filter's "
                          "weights on the 3 input channels (the image's R, G, B) as red, green, blue" if channels == 3 else
                          f"tile i = filter i, drawn as the mean of its {channels} input channels in grey"))
    both = " of all panels" if len(panels) > 1 else ""
    entries.append((None, f"one colour scale for all tiles{both}: mid-grey = 0, full colour = +-{scale:.3g} "
                          f"(the largest |weight|); a flat grey tile is a filter of near-zero weights"))
    rows = []
    for colour, words in entries:
        indent = 22 if colour is not None else 0
        for k, line in enumerate(wrap(words, width - 2 * PAD - indent, BODY)):
            rows.append((colour if k == 0 else None, indent, line))
    canvas = np.full((LINE * len(rows) + PAD, width, 3), 255, np.uint8)
    for k, (colour, indent, line) in enumerate(rows):
        y = LINE * k
        if colour is not None:
            cv2.rectangle(canvas, (PAD, y + 3), (PAD + 14, y + 17), colour, 2)
        text(canvas, line, PAD + indent, y + 15, BODY)
    return canvas


def compare_grids(panels: Sequence[Panel], rule: str = "", min_width: int = 512) -> np.ndarray:
    """RGB uint8 HWC image of ``panels`` side by side on one colour scale, with one legend; ``rule``
    says in words when a filter counts as inactive."""
    scale = max(float(p.weight.detach().abs().max()) for p in panels) or 1.0
    title_lines = max(len(wrap(p.title, panel_width(p, min_width) - 2 * PAD, HEAD)) for p in panels)
    drawn = [_panel(p, scale, min_width, title_lines) for p in panels]
    height = max(d.shape[0] for d in drawn)
    row = np.full((height, sum(d.shape[1] for d in drawn) + GAP * (len(drawn) - 1), 3), 255, np.uint8)
    x = 0
    for k, d in enumerate(drawn):
        row[:d.shape[0], x:x + d.shape[1]] = d
        x += d.shape[1] + GAP
        if k < len(drawn) - 1:
            row[:height - PAD, x - GAP // 2] = 200   # a thin grey rule between panels
    return np.concatenate([row, legend(panels, scale, row.shape[1], rule)])


def filter_grid(weight: torch.Tensor, inactive: Iterable[int] = (), title: str = "",
                revived: Mapping[int, Sequence[int]] = None, rule: str = "", min_width: int = 512) -> np.ndarray:
    """RGB uint8 HWC image of one filter bank (see :func:`compare_grids`)."""
    return compare_grids([Panel(weight, title, tuple(inactive), dict(revived or {}))], rule, min_width)


def revivals(history: Iterable[Mapping]) -> Dict[int, List[int]]:
    """Filter index -> the steps it was revived at, from CRAFT's check history (``step``, ``revived``)."""
    steps: Dict[int, List[int]] = {}
    for record in history:
        for i in record["revived"]:
            steps.setdefault(int(i), []).append(int(record["step"]))
    return steps


def save_png(path, image: np.ndarray) -> bool:
    """Write an RGB image as a PNG; False when OpenCV could not write there."""
    return bool(cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]))
