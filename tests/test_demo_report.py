"""The demo's verdict on the accuracy difference and its report lines."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from craft_plugin.commands.demo_report import T_975, checks_line, paired_difference, verdict


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


def test_checks_line_lists_each_check_with_what_it_found_and_revived():
    assert checks_line({"check_log": [[50, 0, 0], [64, 2, 2], [64, 0, 0]]}) == "50: 0/0, 64: 2/2, 64: 0/0"
    assert checks_line({"check_log": []}) == "none"
