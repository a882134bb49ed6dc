"""Lean (chunked) Partial FC against the materialised Partial FC step: peak memory and time.

One step = Partial FC forward (normalise, cosines, ArcFace margin, distributed cross-entropy) and
backward, float32, embeddings (B, 512), one rank holding C_local classes, sample_rate 1. Cases:
"materialised" is our replica of upstream's step (PartialFC_V2 + CombinedMarginLoss s=64 m=0.5),
"lean" the chunked class (``config.partial_fc``) with the ArcFace margin loss, "upstream" (with
``--upstream PATH`` to an arcface_torch checkout) upstream's own partial_fc_v2.PartialFC_V2 and
losses.CombinedMarginLoss, run on CPU in a one-rank gloo group with ``Tensor.cuda`` made a no-op.

Peak memory: each case runs in a fresh process; after a tiny warm-up step (thread pools,
allocator) and building the classifier and the inputs, the peak RSS mark is reset
(/proc/self/clear_refs) and the step's peak growth over the resident size is read (VmHWM - VmRSS),
in MB and in (B, C) float32 buffers. Time: median of repeats in one process, the cases
interleaved in every round. Ratios are lean / materialised (and lean / upstream), measured in
this run. The flat-memory series keeps B and the chunk fixed and grows C_local; "above floor"
subtracts the weight gradient (C, D) float32 that every Partial FC step allocates.

usage: python bench/bench_lean_pfc.py [--quick] [--chunk N] [--upstream PATH]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from craft_plugin.losses import build_margin_loss
from craft_plugin.partial_fc.lean import DEFAULT_CHUNK, lean_partial_fc
from craft_plugin._replica.losses import CombinedMarginLoss
from craft_plugin._replica.partial_fc import PartialFC_V2

DIM = 512
MB = 1024 * 1024


def load_upstream(path: str):
    """(PartialFC_V2, CombinedMarginLoss) of the arcface_torch checkout at ``path``, runnable on CPU."""
    from torch import distributed

    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # upstream allocates with .cuda()
    if not distributed.is_initialized():
        store = os.path.join(tempfile.mkdtemp(), "store")
        distributed.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    modules = {}
    for name in ("partial_fc_v2", "losses"):
        spec = importlib.util.spec_from_file_location(f"upstream_{name}", os.path.join(path, f"{name}.py"))
        modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[name])
    return modules["partial_fc_v2"].PartialFC_V2, modules["losses"].CombinedMarginLoss


def make(case: str, classes: int, chunk: int, upstream: str = ""):
    torch.manual_seed(0)
    if case == "materialised":
        return PartialFC_V2(CombinedMarginLoss(64, 1.0, 0.5, 0.0), DIM, classes, 1.0, False)
    if case == "lean":
        return lean_partial_fc(PartialFC_V2, chunk)(build_margin_loss("arcface"), DIM, classes, 1.0, False)
    pfc_class, margin_class = load_upstream(upstream)
    return pfc_class(margin_class(64, 1.0, 0.5, 0.0), DIM, classes, 1.0, False)


def inputs(batch: int, classes: int):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(batch, DIM, generator=gen), torch.randint(0, classes, (batch,), generator=gen)


def step(pfc, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
    x = embeddings.clone().requires_grad_(True)
    pfc(x, labels.clone()).backward()
    pfc.weight.grad = None


def memory_kb() -> tuple:
    """(VmHWM, VmRSS) of this process in kB."""
    with open("/proc/self/status") as status:
        text = status.read()
    return tuple(int(text.split(f"{key}:")[1].split()[0]) for key in ("VmHWM", "VmRSS"))


def measure_here(case: str, batch: int, classes: int, chunk: int, upstream: str) -> int:
    """Peak RSS growth in bytes of one step of ``case`` in this (fresh) process."""
    small = make(case, 64, chunk, upstream)
    step(small, *inputs(8, 64))
    pfc = make(case, classes, chunk, upstream)
    embeddings, labels = inputs(batch, classes)
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the peak RSS mark to the current RSS
    base = memory_kb()[1]
    step(pfc, embeddings, labels)
    return (memory_kb()[0] - base) * 1024


def peak_growth(case: str, batch: int, classes: int, chunk: int, upstream: str) -> int:
    code = ("import sys; sys.path.insert(0, 'bench'); import bench_lean_pfc as b; "
            f"print(b.measure_here({case!r}, {batch}, {classes}, {chunk}, {upstream!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    return int(out.stdout.strip().splitlines()[-1])


def times(cases: list, batch: int, classes: int, chunk: int, upstream: str, repeats: int) -> dict:
    """Median step seconds per case, cases interleaved in every round (a warm-up round first)."""
    embeddings, labels = inputs(batch, classes)
    modules = {case: make(case, classes, chunk, upstream) for case in cases}
    seconds = {case: [] for case in cases}
    for round_ in range(repeats + 1):
        for case, pfc in modules.items():
            start = time.perf_counter()
            step(pfc, embeddings, labels)
            if round_:
                seconds[case].append(time.perf_counter() - start)
    return {case: sorted(ts)[len(ts) // 2] for case, ts in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (smoke run)")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="classes per chunk of the lean path")
    parser.add_argument("--upstream", default="", help="an arcface_torch checkout to compare with as well")
    args = parser.parse_args()
    if args.quick:
        sizes, series, repeats, chunk = [(64, 4000)], (2000, 8000), 2, min(args.chunk, 1024)
    else:
        sizes, series, repeats, chunk = [(512, 100000), (1024, 200000)], (50000, 100000, 200000, 400000), 3, args.chunk
    cases = ["materialised", "lean"] + (["upstream"] if args.upstream else [])
    figures = {"chunk": chunk, "dim": DIM}
    print(f"chunk = {chunk} classes, D = {DIM}, float32, {torch.get_num_threads()} threads")
    print(f"{'(B, C_local)':<18}{'case':<14}{'step s':>9}{'x mat.':>8}{'peak MB':>10}{'(B,C) bufs':>12}{'x mat.':>8}")
    for batch, classes in sizes:
        secs = times(cases, batch, classes, chunk, args.upstream, repeats)
        peaks = {case: peak_growth(case, batch, classes, chunk, args.upstream) for case in cases}
        buffer = batch * classes * 4
        row = {}
        for case in cases:
            row[case] = {"s": round(secs[case], 3), "peak_mb": round(peaks[case] / MB, 1),
                         "peak_buffers": round(peaks[case] / buffer, 3)}
            print(f"{str((batch, classes)):<18}{case:<14}{secs[case]:>9.3f}{secs[case] / secs['materialised']:>8.2f}"
                  f"{peaks[case] / MB:>10.1f}{peaks[case] / buffer:>12.2f}{peaks[case] / peaks['materialised']:>8.2f}")
        row["time_ratio"] = round(secs["lean"] / secs["materialised"], 3)
        row["memory_ratio"] = round(peaks["lean"] / peaks["materialised"], 3)
        row["weight_grad_floor_ratio"] = round(classes * DIM * 4 / peaks["materialised"], 3)
        if args.upstream:
            row["time_ratio_upstream"] = round(secs["lean"] / secs["upstream"], 3)
            row["memory_ratio_upstream"] = round(peaks["lean"] / peaks["upstream"], 3)
        figures[f"{batch}x{classes}"] = row
    batch = sizes[0][0]
    print(f"\nlean, B = {batch}, chunk = {chunk}: peak growth as C_local grows")
    print(f"{'C_local':>10}{'peak MB':>10}{'weight grad MB':>16}{'above floor MB':>16}")
    flat = {}
    for classes in series:
        peak = peak_growth("lean", batch, classes, chunk, "")
        floor = classes * DIM * 4
        flat[str(classes)] = {"peak_mb": round(peak / MB, 1), "above_floor_mb": round((peak - floor) / MB, 1)}
        print(f"{classes:>10}{peak / MB:>10.1f}{floor / MB:>16.1f}{(peak - floor) / MB:>16.1f}")
    figures["flat_series"] = flat
    print(json.dumps({"bench": "lean_pfc", "figures": figures}))


if __name__ == "__main__":
    main()
