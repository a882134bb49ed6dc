"""CRAFT inside training: resume equality, rank consistency over gloo, a clean ONNX export."""
from __future__ import annotations

import torch

import craft_plugin.plugin
from craft_plugin._replica.backbone import MiniIResNet
from craft_plugin._replica.config import get_config
from craft_plugin._replica.launch import run_distributed
from craft_plugin._replica.train import train
from craft_plugin.plugin import CHECKPOINT_KEY
from craft_plugin.reactivation.controller import Reactivator
from craft_plugin.reactivation.layer import find_first_layer
from craft_plugin.reactivation.options import ReactivationOptions
from replica_helpers import assert_bit_identical, state_of

# a threshold this high marks about half the filters inactive at every check, so revivals
# happen in runs of a few steps
EAGER = {"every": 2, "start": 2, "threshold": 0.9, "max_revive": 4, "seed": 3}


def craft_config(path, **overrides):
    base = dict(num_epoch=2, rec="synthetic:16x4", num_classes=16, num_image=64, batch_size=8,
                num_workers=1, save_all_states=True, reactivation=EAGER)
    base.update(overrides)
    return get_config(str(path), **base)


def test_resume_with_craft_equals_uninterrupted_run(tmp_path):
    whole = train(craft_config(tmp_path / "whole"), plugins=[craft_plugin.plugin])
    history = craft_plugin.plugin.feature("reactivation").reactivator.history
    assert any(r["revived"] for r in history)
    train(craft_config(tmp_path / "cut", stop_after_epoch=1), plugins=[craft_plugin.plugin])
    saved = torch.load(tmp_path / "cut" / "checkpoint_gpu_0.pt", weights_only=False)
    assert saved[CHECKPOINT_KEY]["reactivation"]["steps"] == 8
    resumed = train(craft_config(tmp_path / "cut", resume=True), plugins=[craft_plugin.plugin])
    assert craft_plugin.plugin.feature("reactivation").reactivator.history == history
    assert_bit_identical(state_of(whole), state_of(resumed))
    whole_opt, resumed_opt = whole.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for key in whole_opt:
        assert torch.equal(whole_opt[key]["momentum_buffer"], resumed_opt[key]["momentum_buffer"])


def rank_bytes(path):
    """Train with CRAFT in this rank; then revive on a deliberately perturbed copy."""
    result = train(craft_config(path), plugins=[craft_plugin.plugin])
    backbone = result.backbone.module
    opt = result.optimizer
    trained = [backbone.conv1.weight, backbone.bn1.weight, backbone.bn1.bias, backbone.prelu.weight]
    out = {"trained": [t.detach().clone() for t in trained],
           "momentum": [opt.state[t]["momentum_buffer"].clone() for t in trained],
           "history": craft_plugin.plugin.feature("reactivation").reactivator.history}
    net = MiniIResNet(16)
    rank = torch.distributed.get_rank()
    with torch.no_grad():
        net.conv1.weight[: 32] *= 1e-4
        net.conv1.weight[40] += 1e-3 * rank  # ranks disagree before the check
    reactivator = Reactivator(ReactivationOptions(**EAGER), find_first_layer(net), None, None, 2)
    reactivator.generator.manual_seed(rank)  # and would draw different filters
    reactivator.check("step")
    out["perturbed"] = net.conv1.weight.detach().clone()
    return out


def test_two_ranks_hold_identical_bytes(tmp_path):
    ranks = run_distributed(rank_bytes, 2, tmp_path)
    assert any(r["revived"] for r in ranks[0]["history"])
    assert ranks[0]["history"] == ranks[1]["history"]
    for a, b in zip(ranks[0]["trained"] + ranks[0]["momentum"], ranks[1]["trained"] + ranks[1]["momentum"]):
        assert torch.equal(a, b)
    assert torch.equal(ranks[0]["perturbed"], ranks[1]["perturbed"])


def test_craft_trained_backbone_exports_to_clean_onnx(tmp_path):
    import onnx
    import onnxruntime

    result = train(craft_config(tmp_path, num_epoch=1, num_workers=0), plugins=[craft_plugin.plugin])
    backbone = result.backbone
    fresh = MiniIResNet(num_features=64)
    assert [n for n, _ in backbone.named_modules()] == [n for n, _ in fresh.named_modules()]
    assert list(backbone.state_dict()) == list(fresh.state_dict())
    for module in backbone.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks
    backbone.eval()
    dummy = torch.rand(2, 3, 32, 32) * 2 - 1
    path = tmp_path / "model.onnx"
    torch.onnx.export(backbone, dummy, str(path), input_names=["data"], output_names=["fc1"],
                      opset_version=11, dynamic_axes={"data": {0: "batch"}, "fc1": {0: "batch"}},
                      dynamo=False)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    ours = backbone(images).detach().numpy()
    theirs = session.run(None, {"data": images.numpy()})[0]
    assert abs(ours - theirs).max() < 1e-4
