"""Margin-loss cost: forward+backward time and peak memory against upstream's CombinedMarginLoss.

For each (B, C) and each loss: logits (B, C) of cosines with labels (10% of rows -1, as on a
rank of a sharded run), then loss(logits) -> cross-entropy -> backward. Time: median of repeats
in this process, the cases interleaved in every round. Peak memory: each case runs once more in a fresh process and reports its peak
RSS growth (VmHWM) over the inputs, after a tiny warm-up step (thread pools, allocator), in units
of one (B, C) float32 buffer. Ratios are against our replica
of upstream's CombinedMarginLoss ArcFace path (craft_plugin._replica.losses), measured in the same
run. The norm-aware Partial FC step (soft) is compared with the stock Partial FC step.

Whole Partial FC steps (embeddings (B, 512) -> Partial FC -> backward, one rank) for the losses
with batch statistics (AdaFace, MagFace through the norm-aware class, CurricularFace through the
stock one, as the plugin picks them): time against upstream's ArcFace step (stock Partial FC with
CombinedMarginLoss), interleaved, and peak RSS growth of one step in a fresh process in (B, C)
float32 buffers, with upstream's step measured the same way.

usage: python bench/bench_losses.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from craft_plugin.losses import build_margin_loss
from craft_plugin.losses.norm_aware_pfc import norm_aware_partial_fc
from craft_plugin._replica.losses import CombinedMarginLoss
from craft_plugin._replica.partial_fc import PartialFC_V2

def with_norms(loss):
    """A loss that scales by the feature norms, given (B, 1) norms with gradient, as the
    norm-aware Partial FC passes them."""
    def call(logits, labels):
        return loss(logits, labels, torch.full((logits.size(0), 1), 30.0, requires_grad=True))
    return call


CASES = {
    "upstream-arcface": lambda: CombinedMarginLoss(64, 1.0, 0.5, 0.0),
    "floor (logits*s)": lambda: (lambda logits, labels: logits * 64),
    "elasticface-arc": lambda: build_margin_loss("elasticface-arc"),
    "elasticface-arc-plus": lambda: build_margin_loss("elasticface-arc-plus"),
    "elasticface-cos": lambda: build_margin_loss("elasticface-cos"),
    "elasticface-cos-plus": lambda: build_margin_loss("elasticface-cos-plus"),
    "sphereface-r-v0": lambda: build_margin_loss({"name": "sphereface-r", "magnitude": "v0"}),
    "sphereface-r-v1": lambda: build_margin_loss({"name": "sphereface-r", "magnitude": "v1"}),
    "sphereface-r-v2": lambda: build_margin_loss({"name": "sphereface-r", "magnitude": "v2"}),
    "sphereface-r-soft": lambda: with_norms(build_margin_loss({"name": "sphereface-r", "norm": "soft"})),
    "adaface": lambda: with_norms(build_margin_loss("adaface")),
    "magface": lambda: with_norms(build_margin_loss("magface")),
    "curricularface": lambda: build_margin_loss("curricularface"),
}

EMBEDDING = 512
PFC_CASES = {  # the Partial FC class each loss gets from the plugin's partial_fc_class hook
    "upstream-arcface": lambda: PartialFC_V2(CombinedMarginLoss(64, 1.0, 0.5, 0.0), EMBEDDING, CLASSES_NOW[0], 1.0, False),
    "adaface": lambda: norm_aware_partial_fc(PartialFC_V2)(build_margin_loss("adaface"), EMBEDDING, CLASSES_NOW[0], 1.0, False),
    "magface": lambda: norm_aware_partial_fc(PartialFC_V2)(build_margin_loss("magface"), EMBEDDING, CLASSES_NOW[0], 1.0, False),
    "curricularface": lambda: PartialFC_V2(build_margin_loss("curricularface"), EMBEDDING, CLASSES_NOW[0], 1.0, False),
}
CLASSES_NOW = [0]  # the class count PFC_CASES build for


def inputs(batch: int, classes: int):
    gen = torch.Generator().manual_seed(0)
    cos = torch.empty(batch, classes).uniform_(-1, 1, generator=gen)  # one buffer, no temporaries
    labels = torch.randint(0, classes, (batch, 1), generator=gen)
    labels[torch.rand(batch, generator=gen) < 0.1] = -1
    return cos, labels


def step(loss_fn, cos: torch.Tensor, labels: torch.Tensor) -> None:
    logits = cos.clone().requires_grad_(True)
    out = loss_fn(logits.clamp(-1, 1), labels)
    F.cross_entropy(out, labels.view(-1), ignore_index=-1).backward()


def time_cases(batch: int, classes: int, repeats: int) -> dict:
    """Median fwd+bwd seconds per case; cases interleaved in every round so drift hits all."""
    cos, labels = inputs(batch, classes)
    fns = {name: make() for name, make in CASES.items()}
    times = {name: [] for name in CASES}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            step(fn, cos, labels)
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: sorted(ts)[len(ts) // 2] for name, ts in times.items()}


def high_water_kb() -> int:
    """This process's peak RSS (VmHWM; unlike ru_maxrss it is not inherited from the parent)."""
    with open("/proc/self/status") as status:
        return int(status.read().split("VmHWM:")[1].split()[0])


def peak_buffers(name: str, batch: int, classes: int) -> float:
    """Peak RSS growth of one step in a fresh process, in (B, C) float32 buffers."""
    code = ("import sys; sys.path.insert(0, 'bench'); import bench_losses as b; "
            f"fn = b.CASES[{name!r}](); b.step(fn, *b.inputs(8, 64)); "
            f"cos, labels = b.inputs({batch}, {classes}); base = b.high_water_kb(); b.step(fn, cos, labels); print(b.high_water_kb() - base)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    return int(out.stdout.strip()) * 1024 / (batch * classes * 4)


def pfc_step_times(batch: int, classes: int, repeats: int) -> tuple:
    """Median step seconds of the stock Partial FC (upstream ArcFace) and of the norm-aware one
    (SphereFace-R soft), interleaved."""
    torch.manual_seed(0)
    stock = PartialFC_V2(CombinedMarginLoss(64, 1.0, 0.5, 0.0), 512, classes, 1.0, False)
    aware = norm_aware_partial_fc(PartialFC_V2)(build_margin_loss({"name": "sphereface-r", "norm": "soft"}),
                                                512, classes, 1.0, False)
    emb = torch.randn(batch, 512)
    labels = torch.randint(0, classes, (batch,))
    times = {"stock": [], "aware": []}
    for round_ in range(repeats + 1):
        for name, pfc in (("stock", stock), ("aware", aware)):
            x = emb.clone().requires_grad_(True)
            start = time.perf_counter()
            pfc(x, labels.clone()).backward()
            if round_:
                times[name].append(time.perf_counter() - start)
    return tuple(sorted(ts)[len(ts) // 2] for ts in (times["stock"], times["aware"]))


def pfc_inputs(batch: int, classes: int):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(batch, EMBEDDING, generator=gen) * 20, torch.randint(0, classes, (batch,), generator=gen)


def pfc_case(name: str, classes: int) -> torch.nn.Module:
    CLASSES_NOW[0] = classes
    torch.manual_seed(0)
    return PFC_CASES[name]()


def pfc_step(pfc: torch.nn.Module, emb: torch.Tensor, labels: torch.Tensor) -> None:
    pfc(emb.clone().requires_grad_(True), labels.clone()).backward()


def pfc_case_times(batch: int, classes: int, repeats: int) -> dict:
    """Median whole-step seconds of every PFC case, interleaved in every round."""
    pfcs = {name: pfc_case(name, classes) for name in PFC_CASES}
    emb, labels = pfc_inputs(batch, classes)
    times = {name: [] for name in PFC_CASES}
    for round_ in range(repeats + 1):
        for name, pfc in pfcs.items():
            start = time.perf_counter()
            pfc_step(pfc, emb, labels)
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: sorted(ts)[len(ts) // 2] for name, ts in times.items()}


def pfc_peak_buffers(name: str, batch: int, classes: int) -> float:
    """Peak RSS growth of one whole Partial FC step in a fresh process (after a warm-up step and
    with the module and inputs already allocated), in (B, C) float32 buffers."""
    code = ("import sys; sys.path.insert(0, 'bench'); import bench_losses as b; "
            f"w = b.pfc_case({name!r}, 64); b.pfc_step(w, *b.pfc_inputs(8, 64)); "
            f"pfc = b.pfc_case({name!r}, {classes}); emb, labels = b.pfc_inputs({batch}, {classes}); "
            "base = b.high_water_kb(); b.pfc_step(pfc, emb, labels); print(b.high_water_kb() - base)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    return int(out.stdout.strip()) * 1024 / (batch * classes * 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (smoke run)")
    args = parser.parse_args()
    sizes = [(64, 5000)] if args.quick else [(256, 50000), (512, 100000)]
    repeats = 3 if args.quick else 7
    figures = {}
    print(f"{'(B, C)':<16}{'loss':<24}{'fwd+bwd ms':>12}{'x upstream':>12}{'peak (B,C) bufs':>17}")
    for batch, classes in sizes:
        times = time_cases(batch, classes, repeats)
        base = times["upstream-arcface"]
        for name in CASES:
            t = times[name]
            mem = peak_buffers(name, batch, classes)
            figures[f"{batch}x{classes}/{name}"] = {"ms": round(t * 1000, 2), "ratio": round(t / base, 3),
                                                    "peak_buffers": round(mem, 2)}
            print(f"{str((batch, classes)):<16}{name:<24}{t * 1000:>12.1f}{t / base:>12.2f}{mem:>17.2f}")
        stock, aware = pfc_step_times(batch, classes, repeats)
        figures[f"{batch}x{classes}/pfc-soft-vs-stock"] = {"stock_ms": round(stock * 1000, 2),
                                                           "norm_aware_ms": round(aware * 1000, 2),
                                                           "ratio": round(aware / stock, 3)}
        print(f"{str((batch, classes)):<16}{'PFC step: soft/stock':<24}{aware * 1000:>12.1f}{aware / stock:>12.2f}")
        steps = pfc_case_times(batch, classes, repeats)
        for name in PFC_CASES:
            t, mem = steps[name], pfc_peak_buffers(name, batch, classes)
            ratio = t / steps["upstream-arcface"]
            figures[f"{batch}x{classes}/pfc-step/{name}"] = {"ms": round(t * 1000, 2), "ratio": round(ratio, 3),
                                                             "peak_buffers": round(mem, 2)}
            print(f"{str((batch, classes)):<16}{'PFC step: ' + name:<24}{t * 1000:>12.1f}{ratio:>12.2f}{mem:>17.2f}")
    print(json.dumps({"bench": "losses", "figures": figures}))


if __name__ == "__main__":
    main()
