"""``craft-plugin inspect`` on model.pt, checkpoints and ONNX exports."""
from __future__ import annotations

import json

import torch

from craft_plugin.cli import main
from craft_plugin._replica.backbone import MiniIResNet


def weak_model():
    net = MiniIResNet(16)
    with torch.no_grad():
        net.conv1.weight[[5, 9]] *= 1e-4
    return net.eval()


def last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_model_checkpoint_and_onnx_agree(tmp_path, capsys):
    net = weak_model()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    torch.save({"epoch": 1, "state_dict_backbone": net.state_dict()}, tmp_path / "checkpoint_gpu_0.pt")
    torch.onnx.export(net, torch.zeros(1, 3, 32, 32), str(tmp_path / "model.onnx"), opset_version=11, dynamo=False)
    reports = []
    for name in ("model.pt", "checkpoint_gpu_0.pt", "model.onnx"):
        assert main(["inspect", str(tmp_path / name), "--json"]) == 0
        reports.append(last_json(capsys))
    for report in reports:
        assert report["inactive"] == [5, 9] and report["fraction"] == 2 / 64
        assert report["shape"] == [64, 3, 3, 3] and len(report["norms"]) == 64
        assert (tmp_path / report["png"].split("/")[-1]).exists()
    assert reports[0]["layer"] == "conv1" and reports[0]["norms"] == reports[1]["norms"]
    assert main(["inspect", str(tmp_path / "model.pt"), "--criterion", "absolute", "--threshold", "1e-9", "--json"]) == 0
    assert last_json(capsys)["inactive"] == []


def test_no_three_channel_conv_is_explained(tmp_path, capsys):
    torch.save(torch.nn.Linear(3, 4).state_dict(), tmp_path / "head.pt")
    assert main(["inspect", str(tmp_path / "head.pt")]) == 2
    assert "no convolution with 3 input channels" in capsys.readouterr().err


def test_png_of_a_checkpoint_marks_the_filters_craft_revived(tmp_path, capsys):
    import cv2
    import numpy as np

    from craft_plugin.reactivation.grid import OUTLINE, REVIVED

    net = weak_model()
    history = [{"step": 100, "reason": "step", "inactive": [7], "revived": [7]},
               {"step": 150, "reason": "step", "inactive": [], "revived": []}]
    torch.save({"global_step": 300, "state_dict_backbone": net.state_dict(),
                "craft_plugin": {"reactivation": {"steps": 300, "history": history}}}, tmp_path / "checkpoint_gpu_0.pt")
    torch.save(net.state_dict(), tmp_path / "model.pt")
    marks = {}
    for name in ("checkpoint_gpu_0.pt", "model.pt"):
        assert main(["inspect", str(tmp_path / name), "--png", str(tmp_path / f"{name}.png"), "--json"]) == 0
        assert last_json(capsys)["inactive"] == [5, 9]
        picture = cv2.cvtColor(cv2.imread(str(tmp_path / f"{name}.png")), cv2.COLOR_BGR2RGB)
        marks[name] = [(picture == np.asarray(colour, np.uint8)).all(axis=2).any() for colour in (OUTLINE, REVIVED)]
    assert marks == {"checkpoint_gpu_0.pt": [True, True], "model.pt": [True, False]}   # model.pt holds no history
