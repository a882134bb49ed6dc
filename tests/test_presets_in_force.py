"""`craft-plugin presets` shows the values in force: SphereFace-R's lw per norm (50 for hard and soft,
1 for none), never the constructor's None placeholder."""
from __future__ import annotations

import json

import pytest

from craft_plugin.cli import main
from craft_plugin.losses import MARGIN_LOSSES, build_margin_loss, defaults_in_force, values_in_force


@pytest.mark.parametrize("norm,lw", [("hard", 50.0), ("none", 1.0), ("soft", 50.0)])
def test_values_in_force_are_what_the_loss_uses(norm, lw):
    spec = {"name": "sphereface-r", "norm": norm}
    assert values_in_force(spec)["lw"] == build_margin_loss(spec).lw == lw
    assert values_in_force({**spec, "lw": 3.0})["lw"] == 3.0  # an explicit value stays


def test_no_loss_lists_a_placeholder_default():
    for name in MARGIN_LOSSES.names():
        assert None not in defaults_in_force(name).values(), name


def test_the_cli_shows_lw_per_norm_and_in_each_preset(capsys):
    assert main(["presets", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["margin_losses"]["sphereface-r"]["lw"] == {"per norm": {"hard": 50.0, "none": 1.0, "soft": 50.0}}
    assert out["presets"]["sphereface-r"]["values"]["margin_loss"]["lw"] == 50.0
    assert out["presets"]["sphereface-r+craft"]["values"]["margin_loss"]["lw"] == 50.0
    assert main(["presets"]) == 0
    text = capsys.readouterr().out
    assert "'lw': None" not in text and "'lw': {'per norm': {'hard': 50.0, 'none': 1.0, 'soft': 50.0}}" in text
