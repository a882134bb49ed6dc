"""The replica of arcface_torch: Partial FC maths, hook calls, the installed-but-disabled plugin
changing nothing, distributed agreement."""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
import pytest

import craft_plugin.plugin
from craft_plugin._replica.config import get_config
from craft_plugin._replica.distributed_sampler import get_dist_info
from craft_plugin._replica.launch import run_distributed
from craft_plugin._replica.losses import CombinedMarginLoss
from craft_plugin._replica.partial_fc import PartialFC_V2
from craft_plugin._replica.train import train
from replica_helpers import Recorder, assert_bit_identical, state_of


def identity_margin(logits, labels):
    return logits * 4.0


def sharded_pfc_step(embeddings, labels, weight):
    """Each rank: its half of the batch and its shard of the classes; returns loss and grads."""
    rank, world = get_dist_info()
    torch.manual_seed(0)
    pfc = PartialFC_V2(identity_margin, weight.size(1), weight.size(0)).double()
    with torch.no_grad():
        pfc.weight.copy_(weight[pfc.class_start:pfc.class_start + pfc.num_local])
    rows = embeddings.size(0) // world
    local = embeddings[rank * rows:(rank + 1) * rows].clone().requires_grad_(True)
    loss = pfc(local, labels[rank * rows:(rank + 1) * rows].clone())
    loss.backward()
    return loss.item(), local.grad, pfc.weight.grad, pfc.class_start


def full_fc_reference(embeddings, labels, weight):
    emb = embeddings.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    logits = F.linear(F.normalize(emb), F.normalize(w)).clamp(-1, 1) * 4.0
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    return loss.item(), emb.grad, w.grad


def test_sharded_partial_fc_equals_full_fc():
    gen = torch.Generator().manual_seed(1)
    embeddings = torch.randn(8, 6, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 4, 1, 6, 2, 2, 5, 3])
    weight = torch.randn(7, 6, generator=gen, dtype=torch.float64)
    ref_loss, ref_emb_grad, ref_w_grad = full_fc_reference(embeddings, labels, weight)
    results = run_distributed(sharded_pfc_step, 2, embeddings, labels, weight)
    # Each rank's embedding gradient is the world size times its rows of the global gradient:
    # DDP then averages the backbone gradients over ranks back to the gradient of the one loss.
    emb_grad = torch.cat([r[1] for r in results])
    w_grad = torch.cat([r[2] for r in results])
    for loss, *_ in results:
        assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert torch.allclose(emb_grad, 2 * ref_emb_grad, atol=1e-12)
    assert torch.allclose(w_grad, ref_w_grad, atol=1e-12)
    assert [r[3] for r in results] == [0, 4]


def test_sample_rate_keeps_positives_and_remaps_labels():
    torch.manual_seed(3)
    pfc = PartialFC_V2(identity_margin, 4, 20, sample_rate=0.5)
    labels = torch.tensor([[7], [2], [-1], [7], [15]])
    original = labels.clone()
    positive = labels != -1
    sampled = pfc.sample(labels, positive)
    assert sampled.shape == (10, 4)
    for row in range(labels.size(0)):
        if original[row, 0] == -1:
            assert labels[row, 0] == -1
        else:
            assert torch.equal(sampled[labels[row, 0]], pfc.weight[original[row, 0]])


def test_combined_margin_arcface_and_cosface_paths():
    cos = torch.tensor([[0.3, -0.2, 0.9], [0.1, 0.5, -0.4]], dtype=torch.float64)
    labels = torch.tensor([[2], [-1]])
    arc = CombinedMarginLoss(64, 1.0, 0.5, 0.0)(cos.clone(), labels)
    expected = cos.clone() * 64
    expected[0, 2] = torch.cos(torch.arccos(cos[0, 2]) + 0.5) * 64
    assert torch.allclose(arc, expected, atol=1e-10)
    cosface = CombinedMarginLoss(64, 1.0, 0.0, 0.4)(cos.clone(), labels)
    expected = cos.clone() * 64
    expected[0, 2] = (cos[0, 2] - 0.4) * 64
    assert torch.allclose(cosface, expected, atol=1e-10)


def tiny_config(tmp_path, **overrides):
    base = dict(num_epoch=1, rec="synthetic:16x4", num_classes=16, num_image=64, batch_size=8)
    base.update(overrides)
    return get_config(str(tmp_path), **base)


EXPECTED_SEQUENCE_HEAD = [
    ("config", ("api",)),
    ("dataloader_factory", ("cfg",)),
    ("margin_loss", ("cfg",)),
    ("partial_fc_class", ("cfg",)),
    ("on_train_start", ("backbone", "cfg", "lr_scheduler", "optimizer", "partial_fc", "rank",
                        "summary_writer", "world_size")),
    ("verification_class", ("cfg",)),
]


@pytest.mark.parametrize("fp16,gradient_acc", [(False, 1), (False, 2), (True, 1)])
def test_hook_calls_and_order(tmp_path, fp16, gradient_acc):
    recorder = Recorder()
    cfg = tiny_config(tmp_path, fp16=fp16, gradient_acc=gradient_acc, save_all_states=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(cfg, plugins=[recorder])
    steps = result.global_step
    assert steps == 8
    # upstream's order: lr_scheduler.step() on every micro-batch, opt.step() every gradient_acc-th, so
    # the schedule counts micro-batches and torch warns at the first one when gradient_acc > 1
    early = [w for w in caught if "lr_scheduler.step()" in str(w.message) and "optimizer.step()" in str(w.message)]
    assert len(early) == (gradient_acc > 1) and result.lr_scheduler.last_epoch == steps
    names = [c[0] for c in recorder.calls]
    assert recorder.calls[:6] == EXPECTED_SEQUENCE_HEAD
    assert names.count("on_optimizer_step") == steps // gradient_acc
    assert names[-3:] == ["on_epoch_end", "on_save_checkpoint", "on_train_end"]
    step_call = next(c for c in recorder.calls if c[0] == "on_optimizer_step")
    assert step_call[1] == ("global_step", "optimizer", "scaler")
    assert all(torch.isfinite(torch.tensor(result.losses)))


def test_installed_but_disabled_plugin_is_bit_identical(tmp_path):
    """The replica shares no code with the plugin: this compares a hooked run with upstream's."""
    plain = train(tiny_config(tmp_path / "plain"), plugins=[])
    hooked = train(tiny_config(tmp_path / "hooked"), plugins=[craft_plugin.plugin])
    assert plain.losses == hooked.losses
    assert_bit_identical(state_of(plain), state_of(hooked))


def test_adamw_and_unknown_optimizer(tmp_path):
    result = train(tiny_config(tmp_path, optimizer="adamw", lr=1e-3, weight_decay=0.1), plugins=[])
    assert isinstance(result.optimizer, torch.optim.AdamW)
    with pytest.raises(ValueError, match="config.optimizer"):
        train(tiny_config(tmp_path, optimizer="lamb"), plugins=[])


def test_resume_equals_uninterrupted(tmp_path):
    common = dict(num_epoch=2, num_workers=1, save_all_states=True)
    whole = train(tiny_config(tmp_path / "whole", **common), plugins=[craft_plugin.plugin])
    train(tiny_config(tmp_path / "cut", stop_after_epoch=1, **common), plugins=[craft_plugin.plugin])
    resumed = train(tiny_config(tmp_path / "cut", resume=True, **common), plugins=[craft_plugin.plugin])
    assert resumed.global_step == whole.global_step
    assert resumed.losses == whole.losses[len(whole.losses) - len(resumed.losses):]
    assert_bit_identical(state_of(whole), state_of(resumed))


class DuplicatedBatches:
    """A test plugin whose data factory gives every rank the same batches, and one process the
    concatenation of the ranks' batches: BatchNorm then sees the same statistics either way,
    so a W-process run and a 1-process run of the same global batch must agree."""

    def __init__(self, world_size: int, steps: int = 6, per_rank: int = 8):
        self.world_size, self.steps, self.per_rank = world_size, steps, per_rank

    def dataloader_factory(self, factory, cfg):
        def build(*args):
            world = get_dist_info()[1]
            copies = self.world_size // world
            gen = torch.Generator().manual_seed(5)
            batches = []
            for _ in range(self.steps):
                img = torch.rand(self.per_rank, 3, 32, 32, generator=gen) * 2 - 1
                labels = torch.randint(0, cfg.num_classes, (self.per_rank,), generator=gen)
                batches.append((img.repeat(copies, 1, 1, 1), labels.repeat(copies)))
            return batches

        return build

    def partial_fc_class(self, pfc_class, cfg):
        class SameInitPartialFC(pfc_class):
            """Row c starts from the same values whichever rank holds class c."""

            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                with torch.no_grad():
                    for row in range(self.num_local):
                        gen = torch.Generator().manual_seed(self.class_start + row)
                        self.weight[row] = torch.randn(self.embedding_size, generator=gen) * 0.01

        return SameInitPartialFC


def train_states(cfg_kwargs, world_size):
    plugin = DuplicatedBatches(world_size)
    cfg_kwargs = dict(cfg_kwargs)
    out = cfg_kwargs.pop("output")
    runs = {}
    for name, plugins in [("plain", [plugin]), ("hooked", [plugin, craft_plugin.plugin])]:
        runs[name] = state_of(train(get_config(f"{out}/{name}", **cfg_kwargs), plugins=plugins))
    return runs


def test_two_process_training_agrees_with_one_process_and_plugin_is_noop(tmp_path):
    kwargs = dict(num_epoch=1, num_classes=10, num_image=48, lr=0.05)
    one = train_states(dict(kwargs, output=str(tmp_path / "one"), batch_size=16), 2)
    two = run_distributed(train_states, 2, dict(kwargs, output=str(tmp_path / "two"), batch_size=8), 2)
    for rank_states in two:
        assert_bit_identical(rank_states["plain"], rank_states["hooked"])
    assert_bit_identical(one["plain"], one["hooked"])
    sharded_fc = torch.cat([two[0]["plain"]["fc.weight"], two[1]["plain"]["fc.weight"]])
    assert torch.allclose(sharded_fc, one["plain"]["fc.weight"], atol=1e-5)
    for key, value in one["plain"].items():
        if key == "fc.weight" or "running_var" in key or "num_batches" in key:
            continue
        # float32 sums in another order; the running variance differs by n/(n-1) of the
        # per-rank batch (8 vs 16 rows), as in upstream where BN buffers are not broadcast.
        assert torch.allclose(two[0]["plain"][key], value, atol=1e-4), key
        assert torch.equal(two[0]["plain"][key], two[1]["plain"][key]) or "running" in key, key
