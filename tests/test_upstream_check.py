"""``tools/arcface_torch_cpu.py`` (upstream's ``train_v2.py`` on CPU) and the argument checks of
``tools/upstream_check.py``. The check itself needs a user's arcface_torch checkout, which the
repository does not hold; docs/upstream_check.md shows its output."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import ROOT
from test_patch import stand_in_checkout


def tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# the CUDA and NCCL calls upstream's train_v2.py and dataset.py make, then one DDP training step
FAKE_TRAIN_V2 = textwrap.dedent("""
    import json, sys
    import torch
    from torch import distributed
    distributed.init_process_group(backend="nccl", init_method="tcp://127.0.0.1:12584", rank=0, world_size=1)
    torch.cuda.set_device(0)
    net = torch.nn.Linear(3, 2).cuda()
    ddp = torch.nn.parallel.DistributedDataParallel(module=net, broadcast_buffers=False, device_ids=[0])
    stream = torch.cuda.Stream(0)
    with torch.cuda.stream(stream):
        x = torch.ones(4, 3).to(device=0, non_blocking=True)
    torch.cuda.current_stream().wait_stream(stream)
    before = net.weight.detach().clone()
    ddp(x).sum().backward()
    torch.optim.SGD(ddp.parameters(), lr=0.5).step()
    print(json.dumps({"backend": distributed.get_backend(), "device": str(x.device), "argv": sys.argv,
                      "dtype": str(torch.ones(1).to(torch.float64).dtype),
                      "step": (before - net.weight.detach()).tolist()}))
""")


def test_train_v2s_cuda_calls_run_on_cpu_through_the_shim(tmp_path):
    (tmp_path / "train_v2.py").write_text(FAKE_TRAIN_V2)
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "arcface_torch_cpu.py"), "configs/job.py"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["backend"] == "gloo" and result["device"] == "cpu" and result["dtype"] == "torch.float64"
    assert result["argv"] == ["train_v2.py", "configs/job.py"]
    # d(sum of Linear(ones))/dW = 4 for every weight (4 rows of ones), so SGD lr 0.5 moves each by 2
    assert torch.allclose(torch.tensor(result["step"]), torch.full((2, 3), 2.0))


def test_the_shim_maps_only_cuda_devices_to_the_cpu():
    cpu_device = tool("arcface_torch_cpu").cpu_device
    for device in (0, 3, "cuda", "cuda:1", torch.device("cuda", 2)):
        assert cpu_device(device) == torch.device("cpu")
    for device in ("cpu", torch.device("cpu"), "meta", None):
        assert cpu_device(device) == device


def test_the_shim_refuses_a_folder_without_train_v2(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "arcface_torch_cpu.py"), "configs/job.py"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "no train_v2.py" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("case", ["missing", "not a checkout", "work not empty", "nproc"])
def test_upstream_check_refuses_bad_arguments_in_one_line(tmp_path, capsys, case):
    checkout = stand_in_checkout(tmp_path / "at")
    work = tmp_path / "work"
    argv = {"missing": [str(tmp_path / "nowhere")],
            "not a checkout": [str(tmp_path)],
            "work not empty": [str(checkout), "--work", str(work)],
            "nproc": [str(checkout), "--nproc", "0"]}[case]
    work.mkdir()
    (work / "old").write_text("x")
    assert tool("upstream_check").main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("upstream_check: "), err
    assert {"missing": "no such folder", "not a checkout": "not an arcface_torch checkout",
            "work not empty": "not empty", "nproc": "--nproc 0"}[case] in err[0]


@pytest.mark.parametrize("patched", [False, True])
def test_the_round_trip_gives_back_the_checkout_patched_or_not(tmp_path, patched):
    from craft_plugin.patching import apply

    checkout = stand_in_checkout(tmp_path / "at")
    if patched:
        apply(str(checkout))
    ok, detail = tool("upstream_check").round_trip(checkout, tmp_path / "copy")
    assert ok, detail
    assert detail.startswith("revert" if patched else "apply")
