"""The ``activation`` criterion (ReDo-style mean |BatchNorm output|) and the CRAFT study's statistics."""
from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from torch import distributed
from torch.nn.modules import module as nn_module

from conftest import ROOT
from craft_plugin._replica.backbone import MiniIResNet
from craft_plugin._replica.launch import run_distributed
from craft_plugin.errors import ConfigError
from craft_plugin.reactivation.controller import Reactivator
from craft_plugin.reactivation.layer import find_first_layer
from craft_plugin.reactivation.options import ReactivationOptions, parse_options


def activation_options(**overrides) -> ReactivationOptions:
    return ReactivationOptions(**{"criterion": "activation", "every": 1, "start": 1, "at_epoch_end": False,
                                  **overrides})


def mean_abs_bn_output(net: MiniIResNet, x: torch.Tensor) -> torch.Tensor:
    """a_c = mean |BN(conv1(x))_c| with training-mode batch statistics, written out by hand."""
    with torch.no_grad():
        y = torch.nn.functional.conv2d(x, net.conv1.weight, padding=1)
        mean = y.mean(dim=(0, 2, 3), keepdim=True)
        var = y.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        z = (y - mean) / torch.sqrt(var + net.bn1.eps) * net.bn1.weight.view(1, -1, 1, 1) + net.bn1.bias.view(1, -1, 1, 1)
        return z.abs().mean(dim=(0, 2, 3))


def weak_net() -> MiniIResNet:
    torch.manual_seed(0)
    net = MiniIResNet(64).train()
    with torch.no_grad():
        net.bn1.weight[5] = 0.0   # channel 5: BN output exactly 0; its conv filter is untouched
        net.bn1.bias[5] = 0.0
        net.bn1.weight[9] = 0.03  # channel 9: about 3% of a typical channel
    return net


def test_options_accept_the_activation_criterion_and_check_its_threshold():
    assert parse_options({"criterion": "activation"}).criterion == "activation"
    with pytest.raises(ConfigError) as info:
        parse_options({"criterion": "activation", "threshold": 1.5})
    assert info.value.key == "reactivation.threshold" and "activation" in str(info.value)


def test_a_filter_whose_batchnorm_output_is_zero_is_detected_and_its_weights_are_not():
    net, x = weak_net(), torch.rand(8, 3, 32, 32)
    scores = mean_abs_bn_output(net, x)
    scores = scores / scores.mean()
    assert scores[5] == 0 and scores[9] < 0.1 and (scores >= 0.1).sum() == 62
    reactivator = Reactivator(activation_options(max_revive=1), find_first_layer(net))
    net(x)
    record = reactivator.step()
    assert record["inactive"] == [5, 9] and record["revived"] == [5]  # weakest first
    by_norm = Reactivator(ReactivationOptions(), find_first_layer(weak_net())).check("step")
    assert by_norm["inactive"] == []  # the weight-norm criterion does not see it


@pytest.mark.parametrize("count", [3, 12, 25])
def test_detection_follows_the_score_relative_to_the_layer_mean(count):
    base, x = weak_net(), torch.rand(8, 3, 32, 32)
    with torch.no_grad():  # spread the channels' scales so that thresholds in (0, 1) split them anywhere
        base.bn1.weight.copy_(torch.linspace(0.02, 1.0, 64)[torch.randperm(64)])
    a = mean_abs_bn_output(base, x)
    ordered = (a / a.mean()).sort()
    threshold = float(ordered.values[count - 1] + ordered.values[count]) / 2
    net = copy.deepcopy(base)
    reactivator = Reactivator(activation_options(threshold=threshold, max_revive=64), find_first_layer(net))
    net(x)
    assert reactivator.step()["inactive"] == sorted(ordered.indices[:count].tolist())


def test_the_hook_exists_only_for_the_step_before_a_check():
    net = MiniIResNet(64).train()
    reactivator = Reactivator(activation_options(every=3, start=3), find_first_layer(net))
    armed = []
    for _ in range(7):
        armed.append(len(net.bn1._forward_hooks))
        net(torch.rand(4, 3, 32, 32))
        reactivator.step()
    armed.append(len(net.bn1._forward_hooks))
    assert armed == [0, 0, 1, 0, 0, 1, 0, 0]
    assert [r["step"] for r in reactivator.history] == [3, 6]
    assert not nn_module._global_forward_hooks
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def test_eval_forwards_are_not_counted_and_a_check_without_a_batch_says_so():
    net = MiniIResNet(64)
    reactivator = Reactivator(activation_options(), find_first_layer(net))
    net.eval()(torch.rand(4, 3, 32, 32))
    with pytest.raises(RuntimeError, match="no training batch"):
        reactivator.step()


def test_an_epoch_end_check_runs_on_the_next_batch_and_survives_a_checkpoint():
    options = ReactivationOptions(criterion="activation", every=0, start=0, max_revive=64)
    net, x = weak_net(), torch.rand(8, 3, 32, 32)
    reactivator = Reactivator(options, find_first_layer(net))
    net(x)
    assert reactivator.step() is None and not net.bn1._forward_hooks
    assert reactivator.epoch_end() is None and len(net.bn1._forward_hooks) == 1
    resumed_net = weak_net()
    resumed = Reactivator(options, find_first_layer(resumed_net))
    resumed.load_state_dict(reactivator.state_dict())
    assert len(resumed_net.bn1._forward_hooks) == 1
    resumed_net(x)
    record = resumed.step()
    assert record["reason"] == "epoch_end" and record["inactive"] == [5, 9]
    assert not resumed_net.bn1._forward_hooks


def rank_activation_check() -> dict:
    """Channel 3 is silent on both ranks; channel 7 reads only the red plane, which is constant in
    rank 0's batch (so its BN output is 0 there) and varied in rank 1's."""
    rank = distributed.get_rank()
    torch.manual_seed(0)
    net = MiniIResNet(64).train()
    with torch.no_grad():
        centre = torch.randn(64, 3)
        net.conv1.weight.zero_()
        net.conv1.weight[:, :, 1, 1] = centre
        net.conv1.weight[7, :, 1, 1] = torch.tensor([1.0, 0.0, 0.0])
        net.bn1.bias.zero_()
        net.bn1.weight[3] = 0.0
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(100 + rank))
    if rank == 0:
        x[:, 0] = 0.5
    local = mean_abs_bn_output(net, x)
    options = activation_options(max_revive=64)
    reactivator = Reactivator(options, find_first_layer(net), world_size=2)
    net(x)
    record = reactivator.step()
    return {"local": local, "inactive": record["inactive"], "weight": net.conv1.weight.detach().clone()}


def test_two_ranks_reduce_the_statistic_and_revive_the_same_filters():
    ranks = run_distributed(rank_activation_check, 2)
    local0 = ranks[0]["local"]
    assert local0[7] / local0.mean() < 0.1  # alone, rank 0 would call channel 7 inactive
    a = (ranks[0]["local"] + ranks[1]["local"]) / 2
    expected = torch.nonzero(a / a.mean() < 0.1).view(-1).tolist()
    assert 3 in expected and 7 not in expected
    assert ranks[0]["inactive"] == ranks[1]["inactive"] == expected
    assert torch.equal(ranks[0]["weight"], ranks[1]["weight"])


def load_study():
    spec = importlib.util.spec_from_file_location("study_craft", ROOT / "bench" / "study_craft.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    return study


def test_study_paired_interval_is_the_t_interval():
    study = load_study()
    mean, low, high = study.t_interval([1.0, 2.0, 3.0, 4.0])
    half = 3.182446 * (5 / 3) ** 0.5 / 2  # t(0.975, 3) x sd / sqrt(4), sd^2 = 5/3
    assert mean == 2.5 and low == pytest.approx(2.5 - half, abs=1e-5) and high == pytest.approx(2.5 + half, abs=1e-5)
    assert study.t_interval([0.5])[1:] == [None, None]


def test_study_pairs_each_arm_with_the_same_seed_baseline():
    study = load_study()
    runs = []
    for seed, shift in enumerate([0.10, 0.30, 0.20]):
        for arm in study.ARMS:
            delta = shift if arm == "craft" else 0.0
            runs.append({"arm": arm, "weight_decay": 0.03, "seed": seed, "curve": [[0, 0.0], [10, 0.1 * seed]],
                         "inactive_final": 0.1 * seed, "inactive_mean": 0.05 * seed, "revived": 0,
                         "final_loss": 1.0 + seed, "accuracy": 0.5 + 0.1 * seed + delta})
    summary = study.summarise(runs, [0.03])
    craft = summary["craft@0.03"]
    assert craft["paired"]["accuracy"][0] == pytest.approx(0.2)
    assert summary["random@0.03"]["paired"]["accuracy"] == pytest.approx([0.0, 0.0, 0.0])
    assert craft["accuracy"][1] == pytest.approx(torch.tensor([0.6, 0.9, 0.9]).std().item())
    assert craft["curve_mean"] == pytest.approx([0.0, 0.1])
