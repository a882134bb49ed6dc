"""Issue 11: every bad config value is one ConfigError naming its key, before training starts; the
relative criterion treats a silent (all-zero or uniformly tiny) first layer as inactive."""
from __future__ import annotations

import logging
import math

import pytest
import torch

import craft_plugin.plugin as plugin
from craft_plugin._replica.backbone import MiniIResNet
from craft_plugin._replica.config import get_config
from craft_plugin.errors import ConfigError
from craft_plugin.reactivation.controller import Reactivator
from craft_plugin.reactivation.detection import Criterion, inactive_mask, summarize
from craft_plugin.reactivation.layer import find_first_layer
from craft_plugin.reactivation.options import parse_options

BAD = [
    ("reactivation.noise", dict(reactivation={"noise": math.inf})),
    ("reactivation.noise", dict(reactivation={"noise": math.nan})),
    ("reactivation.threshold", dict(reactivation={"criterion": "absolute", "threshold": math.inf})),
    ("reactivation.threshold", dict(reactivation={"threshold": math.nan})),
    ("reactivation.seed", dict(reactivation={"seed": 1.5})),
    ("reactivation.seed", dict(reactivation={"seed": 2 ** 70})),
    ("reactivation.seed", dict(reactivation={"seed": -1})),
    ("margin_loss.seed", dict(margin_loss={"name": "elasticface-arc", "seed": 1.5})),
    ("margin_loss.seed", dict(margin_loss={"name": "elasticface-arc", "seed": 2 ** 70})),
    ("margin_loss.seed", dict(margin_loss={"name": "elasticface-arc", "seed": "x"})),
    ("margin_loss.s", dict(margin_loss={"name": "arcface", "s": 10 ** 400})),
    ("margin_loss.steps", dict(margin_loss={"name": "sphereface-r", "steps": 100})),
    ("margin_loss", dict(margin_loss={"name": ["arcface"]})),
    ("rec_reader", dict(rec_reader=0)),
    ("rec_reader", dict(rec_reader=False)),
    ("rec_reader", dict(rec_reader="")),
    ("preset", dict(preset=["arcface"])),
    ("preset", dict(preset={"name": "arcface"})),
]


@pytest.mark.parametrize("key, overrides", BAD, ids=[f"{k}={list(o.values())[0]!r}"[:60] for k, o in BAD])
def test_bad_values_are_one_config_error_naming_the_key(tmp_path, key, overrides):
    cfg = get_config(str(tmp_path), **overrides)
    with pytest.raises(ConfigError) as caught:
        plugin.config(cfg, api=1)
    assert caught.value.key == key
    assert f"config.{key} = " in str(caught.value)


def test_largest_torch_seed_is_accepted():
    assert parse_options({"seed": 2 ** 64 - 1}).seed == 2 ** 64 - 1
    torch.Generator().manual_seed(2 ** 64 - 1)


@pytest.mark.parametrize("scale", [0.0, 1e-20])
def test_relative_criterion_counts_a_silent_layer_as_inactive(scale):
    weight = torch.full((64, 3, 3, 3), scale)
    relative = Criterion("relative", 0.05, 0.75)
    assert bool(inactive_mask(weight.flatten(1).norm(dim=1), relative).all())
    assert summarize(weight, relative)["fraction"] == 1.0


def test_a_uniform_layer_at_a_normal_scale_is_live():
    weight = torch.full((64, 3, 3, 3), 0.1)
    assert summarize(weight, Criterion("relative", 0.05, 0.75))["inactive"] == []


def test_an_all_zero_first_layer_is_revived_by_the_random_fallback_with_its_warning(caplog):
    net = MiniIResNet(16)
    with torch.no_grad():
        net.conv1.weight.zero_()
    reactivator = Reactivator(parse_options({"max_revive": 16}), find_first_layer(net))
    with caplog.at_level(logging.WARNING):
        record = reactivator.check("test")
    assert len(record["inactive"]) == 64 and len(record["revived"]) == 16
    assert record["strategy"] == "random"
    assert "every filter of conv1 is inactive; falling back to the random strategy" in caplog.text
    norms = net.conv1.weight.detach().flatten(1).norm(dim=1)
    assert bool((norms[record["revived"]] > 0).all()) and bool(torch.isfinite(net.conv1.weight).all())
