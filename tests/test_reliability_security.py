"""Issue 11: no file the plugin loads can run code; truncated and empty files are named.

Each payload, if unpickled, would create a marker file; the tests assert the load is refused with
the file named and that the marker does not exist afterwards.
"""
from __future__ import annotations

import os
import pathlib
import pickle

import pytest
import torch

from craft_plugin.checkpoints import CheckpointSetError, UntrustedFileError, load_checkpoint, load_weights
from craft_plugin.cli import main
from craft_plugin.data.binfile import load_bin, read_bin_pairs


class TouchPayload:
    """Unpickling calls ``pathlib.Path(marker).touch()``."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


class SystemPayload:
    """Unpickling runs ``touch marker`` in a shell."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


PAYLOADS = (TouchPayload, SystemPayload)


def planted_checkpoint(path: pathlib.Path, payload) -> None:
    """An arcface_torch-looking checkpoint with a payload beside real tensors."""
    conv = torch.randn(8, 3, 3, 3)
    torch.save({"epoch": 1, "global_step": 10, "state_dict_backbone": {"conv1.weight": conv},
                "state_dict_softmax_fc": {"weight": torch.zeros(4, 2)}, "state_optimizer": {},
                "state_lr_scheduler": {}, "extra": payload}, path)


@pytest.mark.parametrize("payload_type", PAYLOADS)
def test_inspect_refuses_a_planted_model_and_runs_nothing(tmp_path, capsys, payload_type):
    marker = tmp_path / "touched"
    model = tmp_path / "downloaded.pt"
    planted_checkpoint(model, payload_type(marker))
    assert main(["inspect", str(model)]) == 2
    err = capsys.readouterr().err
    assert str(model) in err and "refused" in err
    assert not marker.exists()
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("payload_type", PAYLOADS)
def test_export_refuses_a_planted_model_and_runs_nothing(tmp_path, capsys, payload_type):
    marker = tmp_path / "touched"
    model = tmp_path / "model.pt"
    planted_checkpoint(model, payload_type(marker))
    out = tmp_path / "model.onnx"
    assert main(["export", str(model), str(out), "--module", "craft_plugin._replica.backbone:get_model",
                 "--network", "mini"]) == 2
    err = capsys.readouterr().err
    assert str(model) in err and "refused" in err and "Traceback" not in err
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("payload_type", PAYLOADS)
def test_checkpoint_loaders_refuse_planted_files(tmp_path, payload_type):
    marker = tmp_path / "touched"
    path = tmp_path / "checkpoint_gpu_0.pt"
    planted_checkpoint(path, payload_type(marker))
    with pytest.raises(UntrustedFileError, match="checkpoint_gpu_0.pt: refused"):
        load_weights(path)
    with pytest.raises(UntrustedFileError, match="checkpoint_gpu_0.pt: refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_plain_checkpoint_still_loads(tmp_path):
    path = tmp_path / "model.pt"
    state = {"conv1.weight": torch.randn(8, 3, 3, 3)}
    torch.save(state, path)
    assert torch.equal(load_weights(path)["conv1.weight"], state["conv1.weight"])


def test_truncated_checkpoint_is_named(tmp_path):
    path = tmp_path / "checkpoint_gpu_0.pt"
    planted_checkpoint(path, 0)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointSetError, match="checkpoint_gpu_0.pt: not a readable torch checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("payload_type", PAYLOADS)
@pytest.mark.parametrize("protocol", (2, 4))
def test_bin_refuses_planted_payload(tmp_path, payload_type, protocol):
    marker = tmp_path / "touched"
    path = tmp_path / "lfw.bin"
    path.write_bytes(pickle.dumps(([payload_type(marker), b""], [True]), protocol=protocol))
    with pytest.raises(pickle.UnpicklingError, match="lfw.bin"):
        load_bin(str(path))
    assert not marker.exists()


def test_truncated_and_empty_bins_are_named(tmp_path):
    path = tmp_path / "agedb_30.bin"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="agedb_30.bin: empty file"):
        read_bin_pairs(str(path))
    whole = pickle.dumps(([b"a" * 100, b"b" * 100], [True]), protocol=2)
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="agedb_30.bin: truncated"):
        read_bin_pairs(str(path))
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(ValueError, match="agedb_30.bin: not a .bin"):
        read_bin_pairs(str(path))
