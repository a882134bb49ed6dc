"""``craft-plugin reshard``: a 2-rank run of the replica, cut after one epoch, resumes on 1, 2 and 3
ranks and continues as the uninterrupted 2-rank run does; the classifier's optimizer state stays
with its classes; inconsistent checkpoint sets are refused with nothing written.

The comparison isolates what resharding is responsible for. Two things would make a run's
trajectory depend on the world size itself, so the test removes them: (1) the data: every world
size gets the same global batches of 24 images, rank r of W taking rows [r*24/W, (r+1)*24/W), so the
all-gathered batch is the same rows in the same order (upstream's DistributedSampler interleaves
ranks and its flips are drawn per process); (2) BatchNorm: without SyncBN each rank normalises its
own rows, so the backbone runs in eval mode (per-sample, running statistics untouched).
``sample_rate = 1`` (sampling draws from each rank's own generator). ElasticFace's margins come from
the plugin's generator, so its state must be carried over for the runs to agree.
"""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

import craft_plugin.plugin
from craft_plugin.checkpoints import class_split
from craft_plugin.cli import main
from craft_plugin.data.transforms import label_tensor, to_training_tensor
from craft_plugin._replica.config import get_config
from craft_plugin._replica.launch import run_distributed
from craft_plugin._replica.synthetic import synthetic_image
from craft_plugin._replica.train import train

NUM_CLASSES = 35          # uneven splits: 18+17 on 2 ranks, 12+12+11 on 3
GLOBAL_BATCH = 24         # divisible by 1, 2 and 3
STEPS_PER_EPOCH = 2
IMAGE_SIZE = 16           # the mini backbone pools globally; small images keep the runs short


class GlobalRows(Dataset):
    """Row g of the run: identity g % NUM_CLASSES, its sample g // NUM_CLASSES, unflipped."""

    def __len__(self) -> int:
        return GLOBAL_BATCH * STEPS_PER_EPOCH * 2

    def __getitem__(self, row: int):
        identity, sample = row % NUM_CLASSES, row // NUM_CLASSES
        return to_training_tensor(synthetic_image(0, identity, sample, IMAGE_SIZE), False), label_tensor(identity)


class ThisRanksRows(Sampler):
    """Global batch s of epoch e is rows [(e*S + s)*24, (e*S + s + 1)*24) for every world size;
    rank r of W takes its contiguous part of each. ``set_epoch`` as DistributedSampler's."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.rows, self.epoch = rank, GLOBAL_BATCH // world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return STEPS_PER_EPOCH * self.rows

    def __iter__(self):
        for step in range(STEPS_PER_EPOCH):
            first = (self.epoch * STEPS_PER_EPOCH + step) * GLOBAL_BATCH + self.rank * self.rows
            yield from range(first, first + self.rows)


class WorldSizeFreeRun:
    """Test plugin: the data above, and the backbone in eval mode (see the module docstring).
    With ``keep_cut``, it copies the checkpoint the replica wrote after epoch 1 to that folder before
    epoch 2's overwrites it: one run is both the uninterrupted run and the run cut after epoch 1."""

    def __init__(self, keep_cut=None):
        self.keep_cut = keep_cut

    def dataloader_factory(self, factory, cfg):
        from craft_plugin.distributed import rank_and_world_size

        def same_global_batches(root_dir, local_rank, batch_size, *args):
            sampler = ThisRanksRows(*rank_and_world_size())
            return DataLoader(GlobalRows(), batch_size=batch_size, sampler=sampler, drop_last=True)

        return same_global_batches

    def on_train_start(self, backbone, cfg, **kwargs):
        backbone.eval()
        self.output = cfg.output

    def on_epoch_end(self, epoch, **kwargs):
        from craft_plugin.distributed import rank_and_world_size

        if self.keep_cut and epoch == 1:
            os.makedirs(self.keep_cut, exist_ok=True)
            name = f"checkpoint_gpu_{rank_and_world_size()[0]}.pt"
            shutil.copy(os.path.join(self.output, name), os.path.join(self.keep_cut, name))


def job(output, world_size: int, **overrides):
    return get_config(str(output), num_classes=NUM_CLASSES, num_image=GLOBAL_BATCH * STEPS_PER_EPOCH,
                      batch_size=GLOBAL_BATCH // world_size, save_all_states=True,
                      margin_loss="elasticface-arc", **overrides)


def train_rank(output, world_size: int, overrides: dict, keep_cut=None):
    """Train; return this rank's losses, backbone state and classifier shard."""
    result = train(job(output, world_size, **overrides), plugins=[craft_plugin.plugin, WorldSizeFreeRun(keep_cut)])
    backbone = result.backbone.module if hasattr(result.backbone, "module") else result.backbone
    return (result.losses, {k: v.detach().clone() for k, v in backbone.state_dict().items()},
            result.partial_fc.weight.detach().clone())


def run(output, world_size: int, keep_cut=None, **overrides):
    """``(losses, backbone state, whole classifier)`` of a run on ``world_size`` ranks."""
    ranks = (run_distributed(train_rank, world_size, output, world_size, overrides, keep_cut) if world_size > 1
             else [train_rank(output, 1, overrides, keep_cut)])
    for losses, _, _ in ranks[1:]:
        assert losses == ranks[0][0]  # every rank reports the same global-batch loss
    return ranks[0][0], ranks[0][1], torch.cat([weight for _, _, weight in ranks])


def reshard(*argv, capsys):
    code = main(["reshard", *map(str, argv), "--json"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory):
    """The uninterrupted 2-rank run, and in ``cut`` the checkpoints it wrote after epoch 1."""
    root = tmp_path_factory.mktemp("reshard")
    whole = run(root / "whole", 2, keep_cut=root / "cut")
    assert [c["epoch"] for c in source_shards(root / "cut", 2)] == [1, 1]
    return root, whole


def resume_resharded(root, world_size, capsys):
    out_dir = root / f"resumed{world_size}"
    code, out, _ = reshard(root / "cut", out_dir, "--world-size", world_size, capsys=capsys)
    assert code == 0
    summary = json.loads(out)
    assert summary["files"] == [str(out_dir / f"checkpoint_gpu_{r}.pt") for r in range(world_size)]
    return run(out_dir, world_size, resume=True), summary


def test_reshard_to_two_ranks_resumes_bit_identically(two_rank_runs, capsys):
    # same world size: the same arithmetic in the same order, so the same bits
    root, (whole_losses, whole_backbone, whole_fc) = two_rank_runs
    (losses, backbone, fc), summary = resume_resharded(root, 2, capsys)
    assert summary["source_world_size"] == 2 and summary["class_split"] == [[0, 18], [18, 17]]
    assert summary["optimizer_state_per_class"] == ["momentum_buffer"]
    assert losses == whole_losses[STEPS_PER_EPOCH:]
    assert torch.equal(fc, whole_fc)
    for key, value in whole_backbone.items():
        assert torch.equal(backbone[key], value), key


@pytest.mark.parametrize("world_size", [1, 3])
def test_reshard_to_other_world_sizes_continues_the_run(two_rank_runs, capsys, world_size):
    # Not bit-identical, and not because of the checkpoints: with another class split the softmax
    # denominator is summed per shard and all-reduced in another grouping, and the backbone's
    # gradient is summed over another split of the batch before DDP's all-reduce. Float32
    # rounding differences of ~1e-7 relative, grown over the two resumed SGD steps.
    root, (whole_losses, whole_backbone, whole_fc) = two_rank_runs
    (losses, backbone, fc), summary = resume_resharded(root, world_size, capsys)
    assert summary["class_split"] == [list(class_split(NUM_CLASSES, world_size, r)) for r in range(world_size)]
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(whole_losses[STEPS_PER_EPOCH:]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fc, whole_fc, rtol=1e-4, atol=1e-6)
    for key, value in whole_backbone.items():
        torch.testing.assert_close(backbone[key], value, rtol=1e-4, atol=1e-6, msg=key)


def source_shards(run_dir, world_size):
    return [torch.load(run_dir / f"checkpoint_gpu_{r}.pt", weights_only=True) for r in range(world_size)]


def fc_state(checkpoint):
    optimizer = checkpoint["state_optimizer"]
    return optimizer["state"][optimizer["param_groups"][1]["params"][0]]


@pytest.fixture(scope="module")
def adamw_cut(tmp_path_factory):
    root = tmp_path_factory.mktemp("adamw")
    run(root, 2, stop_after_epoch=1, optimizer="adamw", lr=1e-3, weight_decay=0.1)
    return root


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_optimizer_state_stays_with_its_classes(two_rank_runs, adamw_cut, tmp_path, capsys, optimizer):
    run_dir = two_rank_runs[0] / "cut" if optimizer == "sgd" else adamw_cut
    source = source_shards(run_dir, 2)
    code, out, _ = reshard(run_dir, tmp_path / "merged.pt", "--merge", capsys=capsys)
    assert code == 0 and json.loads(out)["merged"] is True
    merged = torch.load(tmp_path / "merged.pt", weights_only=True)
    code, _, _ = reshard(run_dir, tmp_path / "three", "--world-size", 3, capsys=capsys)
    assert code == 0
    three = source_shards(tmp_path / "three", 3)
    per_class = {"sgd": ["momentum_buffer"], "adamw": ["exp_avg", "exp_avg_sq"]}[optimizer]
    assert sorted(k for k, v in fc_state(three[0]).items() if v.dim() == 2) == per_class
    # class c's row, wherever it lives: source rank c // 18 (18 + 17), merged row c, and for 3 ranks
    # (12 + 12 + 11) rank c // 12
    for c in range(NUM_CLASSES):
        src, src_row = divmod(c, 18)
        dst, dst_row = divmod(c, 12)
        for key in per_class:
            row = fc_state(source[src])[key][src_row]
            assert torch.equal(fc_state(merged)[key][c], row)
            assert torch.equal(fc_state(three[dst])[key][dst_row], row), (key, c)
        weight = source[src]["state_dict_softmax_fc"]["weight"][src_row]
        assert torch.equal(three[dst]["state_dict_softmax_fc"]["weight"][dst_row], weight)
    for checkpoint in three:
        if optimizer == "adamw":
            assert torch.equal(fc_state(checkpoint)["step"], fc_state(source[0])["step"])
        for key in ("epoch", "global_step", "state_lr_scheduler", "craft_plugin"):
            assert checkpoint[key].keys() == source[0][key].keys() if isinstance(checkpoint[key], dict) \
                else checkpoint[key] == source[0][key]
        assert torch.equal(checkpoint["craft_plugin"]["margin_loss"]["generator"],
                           source[0]["craft_plugin"]["margin_loss"]["generator"])


def test_batchnorm_statistics_come_from_rank_0(two_rank_runs, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(two_rank_runs[0] / "cut", run_dir)
    rank1 = torch.load(run_dir / "checkpoint_gpu_1.pt", weights_only=True)
    rank1["state_dict_backbone"]["bn1.running_mean"] += 1.0   # what per-rank BatchNorm leaves
    torch.save(rank1, run_dir / "checkpoint_gpu_1.pt")
    assert reshard(run_dir, tmp_path / "out", "--world-size", 3, capsys=capsys)[0] == 0
    rank0 = torch.load(run_dir / "checkpoint_gpu_0.pt", weights_only=True)
    for checkpoint in source_shards(tmp_path / "out", 3):
        for key, value in rank0["state_dict_backbone"].items():
            assert torch.equal(checkpoint["state_dict_backbone"][key], value), key


def drop_rank_0(run_dir):
    (run_dir / "checkpoint_gpu_0.pt").unlink()


def edit_rank(rank, edit):
    def apply(run_dir):
        path = run_dir / f"checkpoint_gpu_{rank}.pt"
        checkpoint = torch.load(path, weights_only=True)
        edit(checkpoint)
        torch.save(checkpoint, path)
    return apply


def fewer_rows(checkpoint):
    checkpoint["state_dict_softmax_fc"]["weight"] = checkpoint["state_dict_softmax_fc"]["weight"][:16]
    fc_state(checkpoint)["momentum_buffer"] = fc_state(checkpoint)["momentum_buffer"][:16]


def garbage(run_dir):
    (run_dir / "checkpoint_gpu_1.pt").write_bytes(b"not a checkpoint")


@pytest.mark.parametrize("damage, message", [
    (drop_rank_0, "rank(s) [0] missing"),
    (edit_rank(0, fewer_rows), "do not add up"),
    (edit_rank(1, lambda c: c["state_dict_softmax_fc"].update(weight=torch.zeros(17, 63))), "does not fit"),
    (edit_rank(1, lambda c: c.update(epoch=2)), "epoch = 2 but checkpoint_gpu_0.pt has 1"),
    (edit_rank(1, lambda c: c.update(global_step=4)), "global_step = 4 but checkpoint_gpu_0.pt has 2"),
    (edit_rank(1, lambda c: c.pop("state_optimizer")), "not an arcface_torch checkpoint"),
    (garbage, "not a readable torch checkpoint"),
], ids=["missing-rank", "rows", "embedding-size", "epoch", "step", "keys", "garbage"])
def test_inconsistent_sets_are_refused_and_nothing_is_written(two_rank_runs, tmp_path, capsys, damage, message):
    run_dir = tmp_path / "run"
    shutil.copytree(two_rank_runs[0] / "cut", run_dir)
    damage(run_dir)
    for args in (("--world-size", 3), ("--merge",)):
        out = tmp_path / ("out" if args[0] == "--world-size" else "merged.pt")
        code, stdout, stderr = reshard(run_dir, out, *args, capsys=capsys)
        assert code == 2 and stdout == ""
        assert message in stderr and "nothing written" in stderr and "Traceback" not in stderr
        assert not out.exists()


def test_a_missing_last_rank_needs_num_classes(two_rank_runs, tmp_path, capsys):
    # rank 0 alone (18 classes) is a valid 1-rank split: only the class count gives it away
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(two_rank_runs[0] / "cut" / "checkpoint_gpu_0.pt", run_dir)
    code, _, stderr = reshard(run_dir, tmp_path / "out", "--world-size", 2, "--num-classes", NUM_CLASSES, capsys=capsys)
    assert code == 2 and "hold 18 classes, not num_classes = 35" in stderr and not (tmp_path / "out").exists()
    assert reshard(two_rank_runs[0] / "cut", tmp_path / "whole", "--world-size", 2, "--num-classes", NUM_CLASSES,
                   capsys=capsys)[0] == 0


def test_output_folder_with_checkpoints_is_refused(two_rank_runs, capsys):
    cut = two_rank_runs[0] / "cut"
    before = {p.name: p.stat().st_mtime_ns for p in cut.iterdir()}
    code, _, stderr = reshard(cut, cut, "--world-size", 1, capsys=capsys)
    assert code == 2 and "already holds" in stderr
    assert {p.name: p.stat().st_mtime_ns for p in cut.iterdir()} == before
