"""Small helpers shared by the tests that train the replica or compare with it."""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterable, List

import torch

from craft_plugin._replica.train import TrainResult

ROOT = Path(__file__).resolve().parents[1]


def state_of(result: TrainResult) -> Dict[str, torch.Tensor]:
    """Every tensor that defines the trained model: backbone (weights and BN buffers) and FC."""
    backbone = result.backbone.module if hasattr(result.backbone, "module") else result.backbone
    state = {f"backbone.{k}": v.detach().clone() for k, v in backbone.state_dict().items()}
    state.update({f"fc.{k}": v.detach().clone() for k, v in result.partial_fc.state_dict().items()})
    return state


def assert_bit_identical(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


class Recorder:
    """A plugin that records every hook call (name and keyword names) and changes nothing."""

    def __init__(self) -> None:
        self.calls: List[tuple] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def hook(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, tuple(sorted(kwargs))))
            return args[0] if args else None

        return hook


def run_python(python: Path, script: str, *args: str) -> str:
    """stdout of ``script`` run by ``python`` (e.g. the legacy venv's, with the real mxnet) on this
    checkout's code; fails with its stderr."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    out = subprocess.run([str(python), "-c", script, *args], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout


def hash_of(tensors: Iterable[torch.Tensor]) -> str:
    """SHA-256 of the tensors' bytes, in order."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def sampled_norm_aware_step(spec: dict, seed: int, spread: float):
    """One float64 step of the norm-aware Partial FC over the replica's ``PartialFC_V2`` with
    ``sample_rate`` 0.5 (one rank, 10 classes, 4 rows of dimension 5), and what a formula needs
    to recompute it: ``(loss, pfc, cos, remapped labels, norms)``, the cosines taken over the
    centres the step sampled."""
    import torch.nn.functional as F

    from craft_plugin._replica.partial_fc import PartialFC_V2
    from craft_plugin.losses import build_margin_loss
    from craft_plugin.losses.norm_aware_pfc import norm_aware_partial_fc

    gen = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(4, 5, generator=gen, dtype=torch.float64) * spread
    labels = torch.tensor([3, 9, 3, 0])
    weight = torch.randn(10, 5, generator=gen, dtype=torch.float64)
    torch.manual_seed(0)
    pfc = norm_aware_partial_fc(PartialFC_V2)(build_margin_loss(spec), 5, 10, 0.5).double()
    with torch.no_grad():
        pfc.weight.copy_(weight)
    loss = pfc(embeddings.clone(), labels.clone())
    index = pfc.weight_index
    assert set(labels.tolist()) <= set(index.tolist()) and len(index) == 5
    cos = F.linear(F.normalize(embeddings), F.normalize(weight[index])).clamp(-1, 1)
    remapped = torch.tensor([index.tolist().index(y) for y in labels.tolist()])
    return loss, pfc, cos, remapped, embeddings.norm(dim=1)
