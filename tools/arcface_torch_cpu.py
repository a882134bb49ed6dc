"""Run arcface_torch's ``train_v2.py`` on a machine without a GPU, unchanged, for checks on CPU.

    cd insightface/recognition/arcface_torch
    python /path/to/craft-plugin/tools/arcface_torch_cpu.py configs/JOB.py
    torchrun --nproc_per_node=2 /path/to/craft-plugin/tools/arcface_torch_cpu.py configs/JOB.py

Before running ``train_v2.py`` as ``__main__`` (from the current folder), this process is made to
look like a one-GPU-per-rank machine to the script, and nothing else: the process group is
created with gloo instead of NCCL (and on a free port when ``train_v2.py`` is run without
torchrun, instead of its fixed 12584), ``DistributedDataParallel`` gets no ``device_ids``,
``.cuda()`` and ``.to(<a CUDA device or rank number>)`` leave tensors and modules on the CPU, and
``torch.cuda.set_device`` and CUDA streams do nothing. The training itself (model, Partial FC,
loss, optimizer, scheduler, verification, checkpoints) is upstream's code, as patched. fp16 and
DALI need a GPU and stay unsupported. ``tools/upstream_check.py`` runs its checks through this.
"""
from __future__ import annotations

import contextlib
import os
import runpy
import socket
import sys

import torch
import torch.distributed as dist


def cpu_device(device):
    """``device`` with a CUDA device or a bare rank number replaced by the CPU."""
    if isinstance(device, int) or (isinstance(device, (str, torch.device)) and torch.device(device).type == "cuda"):
        return torch.device("cpu")
    return device


class NoStream:
    """Stands in for ``torch.cuda.Stream``: work is synchronous on the CPU."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def wait_stream(self, stream) -> None:
        pass

    def synchronize(self) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install() -> None:
    tensor_to, init_process_group, ddp_init = torch.Tensor.to, dist.init_process_group, \
        torch.nn.parallel.DistributedDataParallel.__init__

    def to(self, *args, **kwargs):
        if args and not isinstance(args[0], (torch.dtype, torch.Tensor)):
            args = (cpu_device(args[0]),) + args[1:]
        if "device" in kwargs:
            kwargs["device"] = cpu_device(kwargs["device"])
        return tensor_to(self, *args, **kwargs)

    def gloo_group(backend=None, init_method=None, **kwargs):
        if init_method == "tcp://127.0.0.1:12584":   # train_v2.py's fixed address without torchrun
            init_method = f"tcp://127.0.0.1:{free_port()}"
        return init_process_group("gloo", init_method=init_method, **kwargs)

    def ddp(self, module, device_ids=None, output_device=None, **kwargs):
        ddp_init(self, module, device_ids=None, output_device=None, **kwargs)

    torch.Tensor.to = to
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    torch.cuda.set_device = lambda device: None
    torch.cuda.Stream = NoStream
    torch.cuda.current_stream = lambda *args, **kwargs: NoStream()
    torch.cuda.stream = lambda stream: contextlib.nullcontext()
    dist.init_process_group = gloo_group
    torch.nn.parallel.DistributedDataParallel.__init__ = ddp


def main(argv) -> None:
    if not os.path.isfile("train_v2.py"):
        sys.exit(f"{argv[0]}: no train_v2.py in {os.getcwd()}; run it from the arcface_torch folder")
    install()
    sys.path.insert(0, os.getcwd())
    sys.argv = ["train_v2.py"] + argv[1:]
    runpy.run_path("train_v2.py", run_name="__main__")


if __name__ == "__main__":
    main(sys.argv)
