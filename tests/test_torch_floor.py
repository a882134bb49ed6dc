"""The torch floor is what the code needs: pyproject's torch>=1.13 (weights_only loading, argsort's
stable=); features of newer torch are used only where present: reshard's memory-mapped reads
(torch >= 2.1) fall back to plain reads with one warning line, export's dynamo=False (torch >= 2.5)
is passed only where torch.onnx.export takes it."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

import craft_plugin.checkpoints as checkpoints
from craft_plugin.commands import export

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_states_the_floor_the_code_needs():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"torch>=1\.13"', text)
    readme = (ROOT / "README.md").read_text()
    assert "torch >= 1.12" not in readme and "torch >= 1.13" in readme


def old_load(f, map_location=None, pickle_module=None, *, weights_only=False, **pickle_load_args):
    """torch.load as torch 2.0 declares it: no mmap."""
    assert weights_only and not pickle_load_args
    return REAL_LOAD(f, map_location=map_location, weights_only=True)


REAL_LOAD = torch.load


def test_memory_mapped_reads_fall_back_on_an_older_torch(tmp_path, monkeypatch, caplog):
    path = tmp_path / "w.pt"
    torch.save({"w": torch.arange(4.0)}, path)
    assert checkpoints.supports_mmap()  # this torch maps
    assert torch.equal(checkpoints.load_weights(path, mmap=True)["w"], torch.arange(4.0))
    monkeypatch.setattr(torch, "load", old_load)
    checkpoints._say_no_mmap.cache_clear()
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert torch.equal(checkpoints.load_weights(path, mmap=True)["w"], torch.arange(4.0))
    lines = [r.getMessage() for r in caplog.records if "memory-map" in r.getMessage()]
    assert len(lines) == 1 and "torch >= 2.1" in lines[0]


def test_export_passes_dynamo_only_where_torch_takes_it(tmp_path, monkeypatch):
    calls = []

    def exporter_without_dynamo(model, args, f, *, input_names=None, output_names=None, opset_version=None,
                                dynamic_axes=None, keep_initializers_as_inputs=None):
        calls.append(("old", opset_version))

    def exporter_with_dynamo(model, args, f, *, input_names=None, output_names=None, opset_version=None,
                             dynamic_axes=None, keep_initializers_as_inputs=None, dynamo=True):
        calls.append(("new", dynamo))

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 112 * 112, 4))
    for fake in (exporter_without_dynamo, exporter_with_dynamo):
        monkeypatch.setattr(torch.onnx, "export", fake)
        export.export_onnx(net, tmp_path / "m.onnx", 11)
    assert calls == [("old", 11), ("new", False)]
