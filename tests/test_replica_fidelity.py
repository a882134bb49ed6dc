"""The replica behaves as upstream where the plugin could tell: its Partial FC cross-entropy works in
place on the margin loss's output (so a loss that saved that output for backward fails, as under
upstream), its cross-entropy is the softmax cross-entropy, every plugin loss survives it, and a
run with the plugin's reader equals, bit for bit, the replica run reading through the real mxnet."""
from __future__ import annotations

import importlib.util
import json
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import craft_plugin.plugin
from craft_plugin.data.writer import write_rec
from craft_plugin.losses import MARGIN_LOSSES, build_margin_loss
from craft_plugin.losses.norm_aware_pfc import norm_aware_partial_fc
from craft_plugin._replica.config import get_config
from craft_plugin._replica.data import training_transform
from craft_plugin._replica.distributed_sampler import DistributedSampler, get_dist_info
from craft_plugin._replica.launch import run_distributed
from craft_plugin._replica.lr_scheduler import PolynomialLRWarmup
from craft_plugin._replica.partial_fc import DistCrossEntropy, PartialFC_V2
from craft_plugin._replica.synthetic import synthetic_image
from craft_plugin._replica.train import train
from replica_helpers import run_python


class SavesItsOutput(torch.nn.Module):
    """A margin loss whose last operation (exp) keeps its own output for the backward pass."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (4 * logits).exp()


class OutOfPlaceCrossEntropy(torch.nn.Module):
    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels.view(-1))


def step(pfc: torch.nn.Module) -> torch.Tensor:
    embeddings = torch.randn(4, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    pfc(embeddings, torch.tensor([0, 3, 5, 1])).backward()
    return embeddings.grad


def test_a_margin_that_saves_its_output_fails_as_under_upstream():
    torch.manual_seed(0)
    pfc = PartialFC_V2(SavesItsOutput(), 8, 6)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        step(pfc)
    # the control: the same margin through an out-of-place cross-entropy trains
    pfc.dist_cross_entropy = OutOfPlaceCrossEntropy()
    grad = step(pfc)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_cross_entropy_is_softmax_cross_entropy_computed_in_place():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(5, 9, generator=gen, dtype=torch.float64) * 3
    labels = torch.tensor([3, -1, 8, 8, 0])  # -1: a row whose class lives on another rank
    z = logits.clone().requires_grad_(True)
    margin_output = z * 1.0
    loss = DistCrossEntropy()(margin_output, labels.view(-1, 1))
    softmax = logits.exp() / logits.exp().sum(dim=1, keepdim=True)
    assert torch.allclose(margin_output.detach(), softmax, atol=1e-15)  # overwritten by the probabilities
    target = torch.tensor([softmax[i, y] if y >= 0 else 0.0 for i, y in enumerate(labels.tolist())])
    assert loss.item() == pytest.approx(-target.clamp_min(1e-30).log().mean().item(), rel=1e-13)
    loss.backward()
    one_hot = torch.zeros_like(softmax)
    for i, y in enumerate(labels.tolist()):
        if y >= 0:
            one_hot[i, y] = 1.0
    assert torch.allclose(z.grad, (softmax - one_hot) / 5, atol=1e-15)


@pytest.mark.parametrize("name", MARGIN_LOSSES.names())
def test_every_plugin_loss_trains_through_the_in_place_cross_entropy(name):
    """Through the stock Partial FC where the loss needs no feature norms, and the norm-aware one."""
    stock_too = not getattr(build_margin_loss(name), "needs_norms", False)
    for partial_fc in [PartialFC_V2] * stock_too + [norm_aware_partial_fc(PartialFC_V2)]:
        torch.manual_seed(0)
        pfc = partial_fc(build_margin_loss(name), 8, 6)
        grad = step(pfc)
        assert torch.isfinite(grad).all() and torch.isfinite(pfc.weight.grad).all(), partial_fc.__name__


@pytest.mark.parametrize("seed", range(6))
def test_training_transform_is_flip_totensor_normalize(seed):
    rgb = np.random.default_rng(seed).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    torch.manual_seed(seed)
    flip = torch.rand(1).item() < 0.5
    torch.manual_seed(seed)
    got = training_transform(rgb)
    expected = torch.from_numpy((rgb[:, ::-1] if flip else rgb).transpose(2, 0, 1).copy()).float() / 255
    assert torch.equal(got, (expected - 0.5) / 0.5)


TRAIN_ON_REC = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)  # importing mxnet does this on the legacy stack: both sides alike
    import craft_plugin.plugin
    from craft_plugin._replica.config import get_config
    from craft_plugin._replica.train import train
    from replica_helpers import hash_of, state_of
    side, rec, out = sys.argv[1:]
    cfg = get_config(out, rec=rec, num_classes=16, num_image=64, batch_size=16, num_epoch=2, num_workers=2)
    result = train(cfg, plugins=[] if side == "upstream" else [craft_plugin.plugin])
    print(json.dumps({"losses": result.losses, "state": hash_of(state_of(result).values())}))
""")


def write_identities(root) -> None:
    write_rec(root, [(synthetic_image(3, k, j, 32), k) for k in range(16) for j in range(4)])


def test_plugin_reader_run_equals_the_replica_reading_through_mxnet(tmp_path, legacy_python):
    """Installed, nothing enabled, no mxnet: the rec_reader feature takes over the data, and the
    training (losses, weights, BN buffers) is bit for bit the replica's run with the real mxnet."""
    write_identities(tmp_path / "data")
    upstream = run_python(legacy_python, TRAIN_ON_REC, "upstream", str(tmp_path / "data"), str(tmp_path / "u"))
    plugin = run_python(sys.executable, TRAIN_ON_REC, "plugin", str(tmp_path / "data"), str(tmp_path / "p"))
    upstream, plugin = json.loads(upstream.splitlines()[-1]), json.loads(plugin.splitlines()[-1])
    assert len(plugin["losses"]) == 8
    assert plugin == upstream


@pytest.mark.skipif(importlib.util.find_spec("mxnet") is not None, reason="mxnet is importable here")
def test_without_mxnet_and_hooks_the_replica_fails_as_upstream(tmp_path):
    write_identities(tmp_path / "data")
    cfg = get_config(str(tmp_path / "out"), rec=str(tmp_path / "data"), num_classes=16, num_image=64)
    with pytest.raises(ModuleNotFoundError, match="mxnet"):
        train(cfg, plugins=[])
    assert train(cfg, plugins=[craft_plugin.plugin]).global_step == 8


VERIFY_BIN = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)
    import craft_plugin.plugin
    from easydict import EasyDict
    from craft_plugin._replica.backbone import MiniIResNet
    from craft_plugin._replica.verification import CallBackVerification
    from craft_plugin.plugin_hooks import plugin_filter
    side, root = sys.argv[1:]
    callback_class = CallBackVerification
    if side == "plugin":
        cfg = craft_plugin.plugin.config(EasyDict(rec_reader="craft"))
        callback_class = plugin_filter("verification_class", CallBackVerification, plugins=[craft_plugin.plugin], cfg=cfg)
    callback = callback_class(val_targets=["val"], rec_prefix=root, image_size=(32, 32))
    torch.manual_seed(0)
    backbone = MiniIResNet(num_features=16)
    callback(1, backbone)
    print(json.dumps({"class": callback_class.__module__, "acc": callback.highest_acc_list}))
""")


def test_plugin_verification_equals_the_replica_reading_through_mxnet(tmp_path, legacy_python):
    """The ``verification_class`` the rec_reader feature substitutes scores a ``.bin`` as the
    replica's callback does with the real mxnet decoding it."""
    from craft_plugin.data.writer import write_bin

    pairs = [(synthetic_image(5, i % 7, i, 32), synthetic_image(5, (i % 7) + (i % 2), 100 + i, 32), i % 2 == 0)
             for i in range(40)]
    write_bin(tmp_path / "val.bin", pairs)
    upstream = json.loads(run_python(legacy_python, VERIFY_BIN, "upstream", str(tmp_path)).splitlines()[-1])
    plugin = json.loads(run_python(sys.executable, VERIFY_BIN, "plugin", str(tmp_path)).splitlines()[-1])
    assert upstream["class"] == "craft_plugin._replica.verification"
    assert plugin["class"] != upstream["class"]
    assert 0.5 < upstream["acc"][0] < 1.0
    assert plugin["acc"] == pytest.approx(upstream["acc"], abs=1e-12)


def sampled_indices(n: int, seeds: list, epoch: int) -> list:
    rank, world_size = get_dist_info()
    sampler = DistributedSampler(list(range(n)), num_replicas=world_size, rank=rank, seed=seeds[rank])
    sampler.set_epoch(epoch)
    return list(sampler)


def test_sampler_shards_one_permutation_seeded_by_rank_0():
    """Each rank gets every world_size-th index of randperm(n) seeded (rank 0's seed) + epoch,
    padded by repeating its head; rank 1's own seed is overridden by rank 0's."""
    ranks = run_distributed(sampled_indices, 2, 11, [7, 99], 3)
    perm = torch.randperm(11, generator=torch.Generator().manual_seed(7 + 3)).tolist()
    padded = perm + perm[:1]
    assert ranks == [padded[0::2], padded[1::2]]


def test_lr_schedule_has_upstreams_chained_arithmetic():
    """Warm-up closed form, then each rate from the previous one (upstream's rounding, not the
    closed form's), equal to the polynomial decay up to rounding; constant after the end."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = PolynomialLRWarmup(optimizer, warmup_iters=4, total_iters=20, power=2.0)
    got = []
    for _ in range(24):
        got.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected, lr = [0.1], 0.1
    for t in range(1, 24):
        if t <= 4:
            lr = 0.1 * t / 4
        elif t <= 20:
            lr = lr * ((1.0 - (t - 4) / 16) / (1.0 - (t - 5) / 16)) ** 2.0
        expected.append(lr)
    assert got == expected
    assert got[12] == pytest.approx(0.1 * (1 - 8 / 16) ** 2, rel=1e-12) and got[20:] == [0.0] * 4
