"""Issue 11: checkpoints and model.pt are written atomically, so a writer killed mid-save leaves the
previous checkpoint, from which training resumes.

The writer is the replica's training (it mirrors the patched train_v2.py, whose saves go through
``atomic_save`` by the compatibility patch) in a subprocess, SIGKILLed while saving: once half-way
through writing the bytes, once after writing and before the rename.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

import craft_plugin.plugin
from craft_plugin._replica.config import get_config
from craft_plugin._replica.train import train
from craft_plugin.atomic_save import atomic_save
from craft_plugin.checkpoints import load_checkpoint, load_weights
from replica_helpers import assert_bit_identical, state_of

COMMON = dict(num_epoch=2, num_workers=1, save_all_states=True, rec="synthetic:16x4", num_classes=16,
              num_image=64, batch_size=8)

# the killed writer: resumes the cut run and blocks inside its first save, at the chosen point
WRITER = textwrap.dedent("""
    import io, os, sys, time
    import torch
    import craft_plugin.atomic_save as atomic
    import craft_plugin.plugin
    from craft_plugin._replica.config import get_config
    from craft_plugin._replica.train import train

    output, point = sys.argv[1], sys.argv[2]
    real_save = torch.save

    def block():
        print("SAVING", flush=True)
        time.sleep(600)

    def half_then_block(obj, handle):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        handle.write(buffer.getvalue()[: buffer.tell() // 2])
        handle.flush()
        block()

    if point == "mid-write":
        atomic.torch.save = half_then_block
    else:
        atomic.os.fsync = lambda fd: block()
    train(get_config(output, resume=True, **%r), plugins=[craft_plugin.plugin])
""" % (COMMON,))


def kill_while_saving(output, point, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    writer = subprocess.Popen([sys.executable, str(script), str(output), point], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = writer.stdout.readline()
        assert line.strip() == "SAVING", writer.stderr.read()
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted 2-epoch run's state and a run cut after epoch 1 (its folder)."""
    root = tmp_path_factory.mktemp("runs")
    whole = train(get_config(str(root / "whole"), **COMMON), plugins=[craft_plugin.plugin])
    train(get_config(str(root / "cut"), stop_after_epoch=1, **COMMON), plugins=[craft_plugin.plugin])
    return whole, root / "cut"


@pytest.mark.parametrize("point", ["mid-write", "before-rename"])
def test_a_writer_killed_mid_save_leaves_the_previous_checkpoint_and_resume_continues(tmp_path, runs, point):
    whole, cut_run = runs
    cut = tmp_path / "cut"
    shutil.copytree(cut_run, cut)
    checkpoint, model = cut / "checkpoint_gpu_0.pt", cut / "model.pt"
    before = checkpoint.read_bytes(), model.read_bytes()

    kill_while_saving(cut, point, tmp_path)

    assert (checkpoint.read_bytes(), model.read_bytes()) == before
    assert (cut / ".checkpoint_gpu_0.pt.partial").exists()  # what the killed writer had staged
    assert load_checkpoint(checkpoint)["epoch"] == 1
    resumed = train(get_config(str(cut), resume=True, **COMMON), plugins=[craft_plugin.plugin])
    assert resumed.global_step == whole.global_step
    assert_bit_identical(state_of(whole), state_of(resumed))
    assert not list(cut.glob(".*.partial"))  # the next save by the same rank replaced the stray file
    assert load_checkpoint(checkpoint)["epoch"] == 2


def test_atomic_save_writes_the_same_bytes_as_torch_save_and_replaces(tmp_path):
    obj = {"w": torch.arange(12.0).view(3, 4), "step": 3}
    plain, atomic = tmp_path / "plain.pt", tmp_path / "atomic.pt"
    with open(plain, "wb") as handle:  # torch.save to a path names the archive after the file; to a handle it does not
        torch.save(obj, handle)
    atomic.write_bytes(b"an older checkpoint")
    atomic_save(obj, atomic)
    assert atomic.read_bytes() == plain.read_bytes()
    assert torch.equal(load_weights(atomic)["w"], obj["w"]) and load_weights(atomic)["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atomic.pt", "plain.pt"]


def test_a_failing_save_leaves_the_target_and_no_staged_file(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"previous")
    with pytest.raises(Exception):
        atomic_save({"fn": lambda: 0}, target)  # a lambda cannot be pickled: torch.save raises mid-write
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_the_patched_train_v2_saves_only_through_atomic_save(tmp_path):
    """On a stand-in checkout holding every line the patches touch: after both patches no
    checkpoint or model.pt save is a bare torch.save, the resume load is weights_only, and the
    added atomic_save.py is this package's."""
    from craft_plugin.patching import apply
    from test_patch import stand_in_checkout

    root = stand_in_checkout(tmp_path)
    assert (root / "train_v2.py").read_text().count("torch.save(") == 3
    apply(root)
    text = (root / "train_v2.py").read_text()
    assert "torch.save(" not in text and text.count("atomic_save(") == 3
    assert "from atomic_save import atomic_save\n" in text and "weights_only=True)" in text
    assert (root / "atomic_save.py").read_text() == open(sys.modules[atomic_save.__module__].__file__).read()
