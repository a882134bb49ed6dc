"""The demo's verdict on the accuracy difference, and the filter-grid picture."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from craft_plugin.commands.demo_report import T_975, paired_difference, verdict
from craft_plugin.reactivation.grid import OUTLINE, filter_grid


def test_t_quantiles_are_students():
    for df, value in T_975.items():
        assert value == pytest.approx(stats.t.ppf(0.975, df), abs=5e-4)


@pytest.mark.parametrize("shift", [0.0, 0.03])
def test_paired_difference_is_the_paired_t_interval(shift):
    rng = np.random.default_rng(0)
    baseline = rng.uniform(0.7, 0.9, 10)
    craft = baseline + shift + rng.normal(0, 0.01, 10)
    got = paired_difference(craft.tolist(), baseline.tolist())
    d = craft - baseline
    low, high = stats.t.interval(0.95, d.size - 1, loc=d.mean(), scale=stats.sem(d))
    assert got["mean"] == pytest.approx(d.mean())
    assert (got["low"], got["high"]) == (pytest.approx(low, abs=1e-4), pytest.approx(high, abs=1e-4))
    assert got["within_noise"] == (low <= 0 <= high)
    assert ("within noise" in verdict(got)) == got["within_noise"]


def test_filter_grid_is_large_numbered_and_outlines_the_inactive():
    weight = torch.randn(64, 3, 3, 3)
    plain, marked = filter_grid(weight), filter_grid(weight, [5])
    assert min(plain.shape[:2]) >= 512
    assert not (plain == OUTLINE).all(axis=2)[:-44].any()   # no outline above the legend without inactive filters
    outlined = (marked == OUTLINE).all(axis=2)[:-44]
    ys, xs = np.nonzero(outlined)
    assert ys.size and xs.min() > marked.shape[1] // 2   # filter 5 sits in the right half of the first row
