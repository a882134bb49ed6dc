"""CRAFT re-activation: options, layer discovery, detection, strategies, consistent revival."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from craft_plugin.amp import step_was_skipped
from craft_plugin.errors import ConfigError
from craft_plugin._replica.backbone import MiniIResNet
from craft_plugin.reactivation.controller import Reactivator
from craft_plugin.reactivation.detection import Criterion, filter_norms, inactive_mask
from craft_plugin.reactivation.layer import find_first_layer
from craft_plugin.reactivation.options import ReactivationOptions, parse_options
from craft_plugin.reactivation.reviver import apply_revival
from craft_plugin.reactivation.strategies import STRATEGIES


def test_options_off_defaults_and_overrides():
    assert parse_options(None) is None and parse_options(False) is None
    assert parse_options("craft") == ReactivationOptions() == parse_options(True)
    assert parse_options({"every": 7, "strategy": "random"}).every == 7


@pytest.mark.parametrize("value,key", [
    ({"evry": 5}, "reactivation.evry"),
    ({"threshold": 0}, "reactivation.threshold"),
    ({"threshold": 1.5}, "reactivation.threshold"),
    ({"criterion": "rms"}, "reactivation.criterion"),
    ({"every": -1}, "reactivation.every"),
    ({"max_revive": 0}, "reactivation.max_revive"),
    ({"start": 10, "stop": 5}, "reactivation.stop"),
    ({"strategy": "copy"}, "reactivation.strategy"),
    ({"reference_quantile": 1.0}, "reactivation.reference_quantile"),
    ("on", "reactivation"),
])
def test_bad_options_name_the_key(value, key):
    with pytest.raises(ConfigError) as info:
        parse_options(value)
    assert info.value.key == key and "expected" in str(info.value)


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, k, s, p):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, p, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.prelu = nn.PReLU(cout)


class MobileFaceNetLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(ConvBlock(3, 64, 3, 2, 1), ConvBlock(64, 64, 3, 1, 1))


class ViTLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, 32, 9, 9)
        self.norm = nn.LayerNorm(32)
        self.head = nn.Conv2d(32, 32, 1)


class Wrapped(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module


def test_layer_discovery_iresnet_mobilefacenet_vit_and_wrappers():
    net = MiniIResNet(16)
    layer = find_first_layer(Wrapped(net))
    assert (layer.name, layer.conv, layer.bn, layer.prelu) == ("conv1", net.conv1, net.bn1, net.prelu)
    mbf = MobileFaceNetLike()
    layer = find_first_layer(mbf)
    assert layer.name == "layers.0.conv" and layer.bn is mbf.layers[0].bn and layer.prelu is mbf.layers[0].prelu
    vit = find_first_layer(ViTLike())
    assert vit.name == "patch_embed.proj" and vit.bn is None and vit.prelu is None
    assert find_first_layer(net, "layers.0.conv1").conv is net.layers[0].conv1
    with pytest.raises(ConfigError, match="reactivation.layer"):
        find_first_layer(net, "nope")
    with pytest.raises(LookupError, match="no Conv2d with 3 input channels"):
        find_first_layer(nn.Sequential(nn.Linear(3, 3)))


def test_detection_absolute_and_relative():
    weight = torch.ones(8, 3, 3, 3)
    weight[2] *= 1e-3
    weight[5] *= 0.05
    norms = filter_norms(weight)
    assert torch.allclose(norms[0], torch.tensor(27.0).sqrt())
    assert inactive_mask(norms, Criterion("absolute", 0.01)).nonzero().view(-1).tolist() == [2]
    assert inactive_mask(norms, Criterion("relative", 0.1)).nonzero().view(-1).tolist() == [2, 5]
    assert inactive_mask(norms * 1000, Criterion("relative", 0.1)).nonzero().view(-1).tolist() == [2, 5]


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_is_finite_scaled_and_not_a_copy(name):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(16, 3, 3, 3, generator=gen)
    strong = torch.arange(4, 16)
    new = STRATEGIES.get(name)(weight, strong, 4, gen, ReactivationOptions())
    assert new.shape == (4, 3, 3, 3) and torch.isfinite(new).all()
    flat, parents = new.flatten(1), weight[strong].flatten(1)
    cos = torch.nn.functional.normalize(flat, dim=1) @ torch.nn.functional.normalize(parents, dim=1).T
    assert cos.abs().max() < 0.99
    assert len({tuple(row.tolist()) for row in flat}) == 4
    if name == "craft":
        target = parents.norm(dim=1).median()
        assert torch.allclose(flat.norm(dim=1), target.expand(4), rtol=1e-5)
    if name == "random":
        assert flat.abs().max() <= 1 / 27 ** 0.5


def trained_state(optimizer_cls):
    net = MiniIResNet(16)
    opt = optimizer_cls(net.parameters(), lr=0.01)
    net(torch.randn(4, 3, 16, 16)).sum().backward()
    opt.step()
    return net, opt


@pytest.mark.parametrize("optimizer_cls", [lambda p, lr: torch.optim.SGD(p, lr, momentum=0.9),
                                           torch.optim.AdamW])
def test_revival_resets_rows_of_filter_followers_and_optimizer(optimizer_cls):
    net, opt = trained_state(optimizer_cls)
    layer = find_first_layer(net)
    with torch.no_grad():
        net.bn1.running_mean.fill_(0.3)
        net.bn1.running_var.fill_(2.0)
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    state_before = {id(p): {k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for p, s in opt.state.items()}
    rows, live = [3, 9], torch.tensor([i for i in range(64) if i not in (3, 9)])
    filters = torch.full((2, 3, 3, 3), 0.5)
    apply_revival(layer, opt, rows, filters, live, reset_followers=True)
    assert torch.equal(net.conv1.weight[rows], filters)
    others = [i for i in range(64) if i not in rows]
    for name in ("conv1.weight", "bn1.weight", "bn1.bias", "prelu.weight", "bn1.running_mean", "bn1.running_var"):
        assert torch.equal(net.state_dict()[name][others], before[name][others]), name
    assert torch.equal(net.bn1.running_mean[rows], torch.zeros(2))
    assert torch.equal(net.bn1.running_var[rows], torch.ones(2))
    assert torch.allclose(net.bn1.weight[rows], before["bn1.weight"][live].median().expand(2))
    assert torch.allclose(net.prelu.weight[rows], before["prelu.weight"][live].median().expand(2))
    for param in (net.conv1.weight, net.bn1.weight, net.bn1.bias, net.prelu.weight):
        for key, buf in opt.state[param].items():
            if torch.is_tensor(buf) and buf.shape == param.shape:
                assert torch.equal(buf[rows], torch.zeros_like(buf[rows])), key
                assert torch.equal(buf[others], state_before[id(param)][key][others]), key
    for name, param in net.named_parameters():
        if name in grads:
            assert torch.equal(param.grad, grads[name]), f"gradient of {name} changed"


def test_non_finite_values_are_refused_and_nothing_written():
    net, opt = trained_state(lambda p, lr: torch.optim.SGD(p, lr, momentum=0.9))
    before = net.conv1.weight.detach().clone()
    filters = torch.zeros(1, 3, 3, 3)
    filters[0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite"):
        apply_revival(find_first_layer(net), opt, [0], filters, torch.arange(1, 64), True)
    assert torch.equal(net.conv1.weight, before)


def make_reactivator(net, opt=None, **options):
    return Reactivator(ReactivationOptions(**options), find_first_layer(net), opt)


def test_nothing_inactive_changes_nothing():
    net, opt = trained_state(lambda p, lr: torch.optim.SGD(p, lr, momentum=0.9))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    momentum = opt.state[net.conv1.weight]["momentum_buffer"].clone()
    record = make_reactivator(net, opt, start=0).check("step")
    assert record["revived"] == [] and record["inactive"] == []
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key])
    assert torch.equal(opt.state[net.conv1.weight]["momentum_buffer"], momentum)


def test_revives_weakest_first_up_to_the_cap():
    net = MiniIResNet(16)
    with torch.no_grad():
        for i, scale in zip((4, 7, 11), (1e-4, 1e-6, 1e-5)):
            net.conv1.weight[i] *= scale
    record = make_reactivator(net, max_revive=2).check("step")
    assert record["inactive"] == [4, 7, 11] and record["revived"] == [7, 11]
    norms = filter_norms(net.conv1.weight)
    assert not inactive_mask(norms, Criterion())[[7, 11]].any()
    assert inactive_mask(norms, Criterion())[4]


def test_everything_inactive_falls_back_to_random_with_a_warning(caplog):
    net = MiniIResNet(16)
    with torch.no_grad():
        net.conv1.weight.zero_()
    with caplog.at_level(logging.WARNING):
        record = make_reactivator(net, criterion="absolute", threshold=1e-3, max_revive=64).check("step")
    assert record["strategy"] == "random" and len(record["revived"]) == 64
    assert "falling back to the random strategy" in caplog.text
    assert torch.isfinite(net.conv1.weight).all() and net.conv1.weight.abs().sum() > 0


def test_schedule_counts_real_steps_in_window():
    net = MiniIResNet(16)
    reactivator = make_reactivator(net, every=3, start=4, stop=10, at_epoch_end=True)
    checked = [reactivator.steps for _ in range(12) if reactivator.step() is not None]
    assert checked == [6, 9]
    assert reactivator.epoch_end() is None  # step 12 is past stop
    assert [r["step"] for r in reactivator.history] == [6, 9]


def test_grad_scaler_skipped_step_is_detected():
    param = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([param], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    scaler.scale(param.sum() * float("inf")).backward()
    scaler.step(opt)
    assert step_was_skipped(scaler, opt)
    scaler.update()
    opt.zero_grad()
    scaler.scale(param.sum()).backward()
    scaler.step(opt)
    assert not step_was_skipped(scaler, opt)
    assert not step_was_skipped(None, opt)


class FakeWriter:
    def __init__(self):
        self.scalars, self.images = [], []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def add_image(self, tag, image, step, dataformats):
        self.images.append((tag, image.shape, image.dtype, step, dataformats))


def test_each_check_is_logged_and_written_to_tensorboard(caplog):
    net = MiniIResNet(16)
    with torch.no_grad():  # revivals are listed weakest first: filter 1 is made the weaker of the two
        net.conv1.weight[1] *= 1e-7
        net.conv1.weight[2] *= 1e-5
    writer = FakeWriter()
    reactivator = Reactivator(ReactivationOptions(), find_first_layer(net), None, writer)
    with caplog.at_level(logging.INFO, logger="craft_plugin.reactivation"):
        reactivator.check("epoch_end")
    assert "2/64 filters of conv1 inactive (3.1%), revived [1, 2] with craft" in caplog.text
    assert ("craft/inactive_fraction", 2 / 64, 0) in writer.scalars and ("craft/revived", 2, 0) in writer.scalars
    tag, shape, dtype, step, fmt = writer.images[0]
    assert tag == "craft/first_layer_filters" and shape[2] == 3 and str(dtype) == "uint8" and fmt == "HWC"
