"""``craft-plugin export``: the replica's backbone exported as torch2onnx.py does, checked against
PyTorch with onnxruntime here, and loaded by insightface's model_zoo as an ArcFaceONNX in a venv of
its own (insightface needs opencv-python, which collides with our opencv-python-headless)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from conftest import ROOT, require
from craft_plugin.cli import main
from craft_plugin._replica.backbone import get_model

INSIGHTFACE_PYTHON = ROOT / ".venv-insightface" / "bin" / "python"
EMBEDDING_SIZE = 64
MODULE = ["--module", "craft_plugin._replica.backbone:get_model", "--network", "mini",
          "--embedding-size", str(EMBEDDING_SIZE)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A mini backbone whose BatchNorm statistics are not the defaults (eval mode must use them),
    saved as model.pt and inside a checkpoint_gpu_0.pt."""
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    net = get_model("mini", num_features=EMBEDDING_SIZE)
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    torch.save(net.state_dict(), root / "model.pt")
    torch.save({"epoch": 1, "global_step": 8, "state_dict_backbone": net.state_dict()}, root / "checkpoint_gpu_0.pt")
    return root, net.eval()


def export(*argv, capsys):
    code = main(["export", *map(str, argv), "--json"])
    out, err = capsys.readouterr()
    return code, out, err


def embeddings(net, images_rgb_uint8):
    """arcface_torch's preprocessing ((x / 255 - 0.5) / 0.5 on RGB) and the PyTorch forward."""
    x = torch.from_numpy(images_rgb_uint8).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.5)
    with torch.no_grad():
        return net(x).numpy()


def images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)


def test_export_is_torch2onnx_shaped_and_matches_pytorch(trained, tmp_path, capsys):
    root, net = trained
    code, out, _ = export(root / "model.pt", tmp_path / "model.onnx", *MODULE, capsys=capsys)
    assert code == 0
    summary = json.loads(out)  # stdout is exactly one JSON document
    assert summary["relative_diff"] < 1e-4 and summary["opset"] == 11
    model = onnx.load(str(tmp_path / "model.onnx"))
    onnx.checker.check_model(model)
    assert [op.version for op in model.opset_import if op.domain in ("", "ai.onnx")] == [11]
    (data,) = model.graph.input
    dims = data.type.tensor_type.shape.dim
    assert data.name == "data" and dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 112, 112]
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 5):  # the batch dimension is dynamic
        rgb = images(batch, seed=batch)
        x = (rgb.transpose(0, 3, 1, 2).astype(np.float32) / 255 - 0.5) / 0.5
        np.testing.assert_allclose(session.run(None, {"data": x})[0], embeddings(net, rgb), rtol=1e-4, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temporary file left


def write_checkout(root):
    """A stand-in for the user's arcface_torch checkout: its backbones.get_model (which prints),
    configs/ and utils.utils_config.get_config, with our mini network as its only backbone."""
    files = {
        "backbones/__init__.py": textwrap.dedent("""\
            from craft_plugin._replica.backbone import get_model as mini

            def get_model(name, **kwargs):
                print("user code printing on stdout")  # must not spoil --json
                return mini(name, **kwargs)
            """),
        "configs/__init__.py": "",
        "configs/base.py": "from easydict import EasyDict\nconfig = EasyDict()\nconfig.network = 'r50'\n"
                           "config.embedding_size = 512\nconfig.output = None\n",
        "configs/mini_job.py": f"from easydict import EasyDict\nconfig = EasyDict()\nconfig.network = 'mini'\n"
                               f"config.embedding_size = {EMBEDDING_SIZE}\n",
        "utils/__init__.py": "",
        "utils/utils_config.py": textwrap.dedent("""\
            import importlib
            import os.path as osp

            def get_config(config_file):
                name = osp.splitext(osp.basename(config_file))[0]
                cfg = importlib.import_module("configs.base").config
                cfg.update(importlib.import_module("configs." + name).config)
                return cfg
            """),
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    root = tmp_path / "arcface_torch"
    write_checkout(root)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield root
    for name in [m for m in sys.modules if m.split(".")[0] in ("backbones", "configs", "utils")]:
        if str(root) in (getattr(sys.modules[name], "__file__", None) or ""):
            del sys.modules[name]


def test_checkpoint_and_run_config_give_the_same_export(trained, checkout, tmp_path, capsys):
    root, net = trained
    code, out, _ = export(root / "checkpoint_gpu_0.pt", tmp_path / "ckpt.onnx", "--arcface-torch", checkout,
                          "--config", "configs/mini_job", capsys=capsys)
    assert code == 0
    summary = json.loads(out)
    assert summary["network"] == "mini" and summary["embedding_size"] == EMBEDDING_SIZE
    assert summary["factory"].startswith(str(checkout))
    session = onnxruntime.InferenceSession(str(tmp_path / "ckpt.onnx"), providers=["CPUExecutionProvider"])
    rgb = images(3)
    x = (rgb.transpose(0, 3, 1, 2).astype(np.float32) / 255 - 0.5) / 0.5
    np.testing.assert_allclose(session.run(None, {"data": x})[0], embeddings(net, rgb), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("argv, message", [
    ([], "no network"),
    (["--module", "craft_plugin._replica.backbone:get_model", "--network", "mini"], "does not fit network 'mini' with num_features=512"),
    (["--module", "craft_plugin._replica.backbone", "--network", "mini"], "expected PKG.MOD:FACTORY"),
    (["--arcface-torch", "/nonexistent", "--network", "r50"], "no backbones/__init__.py"),
], ids=["no-network", "embedding-size", "module-path", "checkout"])
def test_bad_arguments_are_refused_and_nothing_written(trained, tmp_path, capsys, argv, message):
    root, _ = trained
    code, out, err = export(root / "model.pt", tmp_path / "model.onnx", *argv, capsys=capsys)
    assert code == 2 and out == "" and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_not_a_state_dict_is_refused(tmp_path, capsys):
    (tmp_path / "model.pt").write_bytes(b"junk")
    code, _, err = export(tmp_path / "model.pt", tmp_path / "model.onnx", *MODULE, capsys=capsys)
    assert code == 2 and "not a readable torch file" in err and not (tmp_path / "model.onnx").exists()


INSIGHTFACE_SCRIPT = """
import json, sys
import numpy as np
from insightface.model_zoo import get_model
model = get_model(sys.argv[1])
model.prepare(ctx_id=-1)
feats = model.get_feat(list(np.load(sys.argv[2])))
np.save(sys.argv[3], feats)
print(json.dumps({"class": type(model).__name__, "input_mean": model.input_mean, "input_std": model.input_std}))
"""


def test_insightface_model_zoo_loads_the_export_as_arcface(trained, tmp_path, capsys):
    require(INSIGHTFACE_PYTHON.exists(), f"{INSIGHTFACE_PYTHON} missing: run tools/make_insightface_venv.sh")
    root, net = trained
    assert export(root / "model.pt", tmp_path / "model.onnx", *MODULE, capsys=capsys)[0] == 0
    bgr = images(4)  # insightface takes OpenCV's BGR images and swaps them to RGB
    np.save(tmp_path / "bgr.npy", bgr)
    done = subprocess.run([str(INSIGHTFACE_PYTHON), "-c", INSIGHTFACE_SCRIPT, str(tmp_path / "model.onnx"),
                           str(tmp_path / "bgr.npy"), str(tmp_path / "feats.npy")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts == {"class": "ArcFaceONNX", "input_mean": 127.5, "input_std": 127.5}
    np.testing.assert_allclose(np.load(tmp_path / "feats.npy"), embeddings(net, bgr[..., ::-1].copy()),
                               rtol=1e-4, atol=1e-5)
