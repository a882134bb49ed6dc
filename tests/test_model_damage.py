"""Damaged model files given to ``inspect``: one line naming the file, exit 2, and a message that
says what was found (a damaged file is not said to hold code)."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch

from craft_plugin.checkpoints import UnreadableTorchFile, UntrustedFileError, load_weights
from craft_plugin.cli import main


def one_line(err, *needles):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def onnx_model(path, damage=None):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(8 * 3 * 3 * 3, dtype=np.float32).reshape(8, 3, 3, 3), "conv1.weight")
    if damage:
        damage(weight)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "conv1.weight"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])], [weight])
    onnx.save(helper.make_model(graph), str(path))
    return path


def cut(weight):
    weight.raw_data = weight.raw_data[:-10]


def redim(weight):
    weight.dims[3] = 4


def test_an_intact_onnx_reads(tmp_path, capfd):
    assert main(["inspect", str(onnx_model(tmp_path / "m.onnx")), "--json"]) == 0


@pytest.mark.parametrize("damage", [cut, redim])
def test_a_damaged_onnx_initializer_is_one_line_exit_2(tmp_path, capfd, damage):
    path = onnx_model(tmp_path / "m.onnx", damage)
    assert main(["inspect", str(path)]) == 2
    one_line(capfd.readouterr().err, str(path), "damaged ONNX initializer 'conv1.weight'")


def torch_file_with_damaged_pickle(path, change):
    buffer = io.BytesIO()
    torch.save({"conv.weight": torch.ones(8, 3, 3, 3)}, buffer)
    source, out = zipfile.ZipFile(io.BytesIO(buffer.getvalue())), io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for item in source.infolist():
            data = source.read(item.filename)
            target.writestr(item, change(data) if item.filename.endswith("data.pkl") else data)
    path.write_bytes(out.getvalue())
    return path


@pytest.mark.parametrize("change, error, words", [
    (lambda d: d[: len(d) // 2], UntrustedFileError, "or its pickle is damaged"),   # a global's name cut short
    (lambda d: d[:10] + b"\xee" + d[11:], UnreadableTorchFile, "not a readable torch file: damaged"),
    (lambda d: b"", UnreadableTorchFile, "not a readable torch file: damaged"),
])
def test_a_damaged_data_pkl_is_not_said_to_execute_anything(tmp_path, capfd, change, error, words):
    path = torch_file_with_damaged_pickle(tmp_path / "model.pt", change)
    with pytest.raises(error, match=words):
        load_weights(path)
    assert main(["inspect", str(path)]) == 2
    line = one_line(capfd.readouterr().err, str(path), words)
    assert "execute" not in line


def test_a_text_file_is_one_clear_line(tmp_path, capfd):
    path = tmp_path / "model.pt"
    path.write_text("hello world\n")
    assert main(["inspect", str(path)]) == 2
    line = one_line(capfd.readouterr().err, str(path), "not a readable torch file", "b'hell'")
    assert "KeyError" not in line


@pytest.mark.parametrize("extra", [{"craft_plugin": [1]}, {"craft_plugin": {"reactivation": {"history": "x"}}},
                                   {"craft_plugin": {"reactivation": {"history": [{"step": 3, "revived": "1"}]}}},
                                   {"global_step": "5"}])
def test_a_checkpoint_with_a_foreign_plugin_entry_is_one_line(tmp_path, capfd, extra):
    net = torch.nn.Conv2d(3, 8, 3)
    path = tmp_path / "checkpoint_gpu_0.pt"
    torch.save({"state_dict_backbone": net.state_dict(), "global_step": 5, **extra}, path)
    assert main(["inspect", str(path), "--png", str(tmp_path / "x.png")]) == 2
    one_line(capfd.readouterr().err, str(path), "checkpoint key")
