"""The conv1 filter picture: one colour scale across compared panels, marks only for what is drawn,
revivals with their steps."""
from __future__ import annotations

import numpy as np
import torch

from craft_plugin.reactivation.grid import (OUTLINE, REVIVED, Panel, caption, compare_grids, filter_grid,
                                            revival_label, revivals)


def colour_mask(image: np.ndarray, rgb) -> np.ndarray:
    return (image == np.asarray(rgb, np.uint8)).all(axis=2)


def bank(first_filter=None) -> torch.Tensor:
    """64 zero filters (flat mid-grey tiles), filter 0 set to one colour per input channel."""
    weight = torch.zeros(64, 3, 3, 3)
    if first_filter is not None:
        weight[0] = torch.tensor(first_filter).view(3, 1, 1)
    return weight


def test_panels_side_by_side_share_one_colour_scale():
    # w / s * 0.5 + 0.5 on the scale s = max |w| of BOTH panels (1.0 here): (1, -1, 0) -> (255, 0, 128),
    # (0.5, -0.5, 0) -> (191, 64, 128). On its own scale (0.5) the right panel's filter 0 would be (255, 0, 128).
    strong, weak = (255, 0, 128), (191, 64, 128)
    picture = compare_grids([Panel(bank([1.0, -1.0, 0.0]), "left"), Panel(bank([0.5, -0.5, 0.0]), "right")])
    half = picture.shape[1] // 2
    assert colour_mask(picture[:, :half], strong).sum() > 100 and not colour_mask(picture[:, half:], strong).any()
    assert colour_mask(picture[:, half:], weak).sum() > 100 and not colour_mask(picture[:, :half], weak).any()
    alone = filter_grid(bank([0.5, -0.5, 0.0]))
    assert colour_mask(alone, strong).sum() > 100 and not colour_mask(alone, weak).any()


def test_marks_and_their_legend_entries_appear_only_when_drawn():
    weight = torch.randn(64, 3, 3, 3)
    plain = filter_grid(weight, title="model.pt: layer conv1")
    assert not colour_mask(plain, OUTLINE).any() and not colour_mask(plain, REVIVED).any()   # no empty legend box
    marked = filter_grid(weight, [5], title="model.pt: layer conv1")
    assert colour_mask(marked, OUTLINE).any() and not colour_mask(marked, REVIVED).any()
    ys, xs = np.nonzero(colour_mask(marked, OUTLINE))
    grid_part = ys < marked.shape[0] - 150            # the outline around tile 5, not the legend's box
    assert xs[grid_part].min() > marked.shape[1] // 2  # filter 5 sits in the right half of the first row
    revived = filter_grid(weight, [], "craft", {9: [150]})
    assert colour_mask(revived, REVIVED).any() and not colour_mask(revived, OUTLINE).any()


def test_a_title_and_the_legend_lines_are_drawn_in_their_strips():
    weight = torch.zeros(64, 3, 3, 3)
    untitled, titled = filter_grid(weight), filter_grid(weight, title="craft run\nconv1 at step 448")
    assert titled.shape[0] > untitled.shape[0]
    assert (titled[:20] < 100).any()                  # dark text in the title strip
    assert (titled[-20:] < 100).any()                 # and in the legend under the grid


def test_revivals_are_read_from_the_check_history_with_their_steps():
    history = [{"step": 50, "revived": [3, 7]}, {"step": 64, "revived": []}, {"step": 100, "revived": [3]}]
    assert revivals(history) == {3: [50, 100], 7: [50]}
    assert revival_label([50]) == "@50" and revival_label([50, 100]) == "2x@100"
    panel = Panel(torch.zeros(64, 3, 3, 3), "craft", [1, 2], revivals(history))
    assert caption(panel, 64) == "2 of 64 filters inactive; 3 revivals of 2 filters during training"
    one = Panel(torch.zeros(64, 3, 3, 3), "craft", [], revivals([{"step": 50, "revived": [3]}]))
    assert caption(one, 64) == "0 of 64 filters inactive; 1 revival of 1 filter during training"
