"""load_extra_state(extra_state()) replays the same draws and statistics at any point, before the
first step included: every registered margin loss, and CRAFT's controller, directly and through the
plugin's checkpoint hooks (torch.save / weights_only load in between)."""
from __future__ import annotations

import io

import pytest
import torch
from easydict import EasyDict

import craft_plugin.plugin as plugin
from craft_plugin.losses import MARGIN_LOSSES, build_margin_loss
from craft_plugin._replica.backbone import MiniIResNet

ROWS, CLASSES = 6, 5


def through_a_file(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def inputs(step):
    """The batch of ``step``: the same whichever loss state is loaded."""
    gen = torch.Generator().manual_seed(100 + step)
    cos = torch.rand(ROWS, CLASSES, generator=gen, dtype=torch.float64) * 1.8 - 0.9
    labels = torch.randint(0, CLASSES, (ROWS, 1), generator=gen)
    labels[1] = -1
    norms = torch.rand(ROWS, 1, generator=gen, dtype=torch.float64) * 60 + 5
    return cos, labels, norms


def run(loss, start, count):
    outputs = []
    for step in range(start, start + count):
        cos, labels, norms = inputs(step)
        out = loss(cos, labels, norms) if loss.needs_norms else loss(cos, labels)
        loss.on_step()
        outputs.append(out.detach())
    return outputs


# no state that changes an output (SphereFace-R counts steps, but without a schedule its margin is fixed)
STATELESS = {"arcface", "cosface", "magface"}
SPECS = [{"name": name} for name in MARGIN_LOSSES.names() if name != "sphereface-r"] + [
    {"name": "sphereface-r", "dm": 0.2, "steps": [1, 3]}]  # a margin schedule: the step counter matters


@pytest.mark.parametrize("at", [0, 2])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_a_saved_state_replays_the_same_steps(spec, at):
    loss = build_margin_loss(spec)
    run(loss, 0, at)
    saved = through_a_file(loss.extra_state())
    first = run(loss, at, 3)
    if spec["name"] not in STATELESS:  # without the load the replay would differ
        assert not all(torch.equal(a, b) for a, b in zip(first, run(loss, at, 3)))
    loss.load_extra_state(saved)
    again = run(loss, at, 3)
    fresh = build_margin_loss(spec)
    run(fresh, 0, 1)  # a loss that has drawn / averaged since
    fresh.load_extra_state(saved)
    other = run(fresh, at, 3)
    for a, b, c in zip(first, again, other):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_elasticface_before_the_first_draw_replays_the_seed():
    loss = build_margin_loss("elasticface-arc")
    saved = loss.extra_state()
    first = run(loss, 0, 2)
    loss.load_extra_state(saved)
    assert all(torch.equal(a, b) for a, b in zip(first, run(loss, 0, 2)))
    loss.load_extra_state({})  # what a checkpoint saved before the first draw held until now
    assert all(torch.equal(a, b) for a, b in zip(first, run(loss, 0, 2)))


def craft_run(net, opt, start, count):
    """``count`` real optimizer steps with two filters weakened before each: every check revives
    them from random draws of CRAFT's generator."""
    weights = []
    for step in range(start, start + count):
        with torch.no_grad():
            net.conv1.weight[[1 + step % 5, 9]] *= 1e-6
        plugin.on_optimizer_step(global_step=step + 1, optimizer=opt, scaler=None)
        weights.append(net.conv1.weight.detach().clone())
    return weights


@pytest.mark.parametrize("at", [0, 2])
def test_plugin_checkpoint_state_replays_every_feature(at):
    cfg = plugin.config(EasyDict(margin_loss="elasticface-arc-plus", reactivation={"every": 1, "start": 0}))
    torch.manual_seed(0)
    net = MiniIResNet(16)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    plugin.on_train_start(cfg=cfg, backbone=net, partial_fc=None, optimizer=opt, lr_scheduler=None,
                          summary_writer=None, rank=0, world_size=1)
    loss = plugin.margin_loss(None, cfg)
    run(loss, 0, at)
    craft_run(net, opt, 0, at)
    checkpoint = {"weights": {k: v.clone() for k, v in net.state_dict().items()}}
    plugin.on_save_checkpoint(checkpoint)
    checkpoint = through_a_file(checkpoint)
    first = run(loss, at, 3), craft_run(net, opt, at, 3)
    history = [dict(r) for r in plugin.feature("reactivation").reactivator.history]
    net.load_state_dict(checkpoint["weights"])
    plugin.on_resume(checkpoint)
    again = run(loss, at, 3), craft_run(net, opt, at, 3)
    for a, b in zip(first[0] + first[1], again[0] + again[1]):
        assert torch.equal(a, b)
    assert plugin.feature("reactivation").reactivator.history == history
    assert len(history) == at + 3 and all(r["revived"] for r in history)
