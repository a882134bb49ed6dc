"""Lean (chunked) Partial FC against the materialised Partial FC step: peak memory and time.

One step = Partial FC forward (normalise, cosines, ArcFace margin, distributed cross-entropy) and
backward, float32, embeddings (B, 512), one rank holding C_local classes, sample_rate 1. Cases:
"materialised" is our replica of upstream's step (PartialFC_V2 + CombinedMarginLoss s=64 m=0.5),
"recompute" and "keep" the chunked class (``config.partial_fc``, ``"recompute"`` True / False)
with the ArcFace margin loss, "upstream" (with ``--upstream PATH`` to an arcface_torch checkout)
upstream's own partial_fc_v2.PartialFC_V2 and losses.CombinedMarginLoss, run on CPU in a one-rank
gloo group with ``Tensor.cuda`` made a no-op. Ratios are against upstream's step when
``--upstream`` is given, else against the replica's ("materialised").

WebFace42M-scale row (10M identities on 8 GPUs: C_local = 1.25M, B = 512): one training step of
the classifier with its optimizer state (SGD momentum 0.9, weight decay 5e-4, as arcface_torch's
train_v2.py), after a first step that creates the momentum buffer: the lean path at sample_rate
1.0 against upstream's step (or the replica's) at sample_rate 0.1, both holding the full
C_local x 512 weight. Reported: what the weight and momentum hold before the step, the peak
during forward+backward and during the optimizer step, each over the process before the
classifier was built, and the step's time.

Peak memory: each case runs in a fresh process; after a tiny warm-up step (thread pools,
allocator) and building the classifier and the inputs, the peak RSS mark is reset
(/proc/self/clear_refs) and the step's peak growth over the resident size is read (VmHWM - VmRSS),
in MB and in (B, C) float32 buffers. Time: median of repeats in one process, the cases
interleaved in every round. Ratios are lean / materialised (and lean / upstream), measured in
this run. The flat-memory series keeps B and the chunk fixed and grows C_local; "above floor"
subtracts the weight gradient (C, D) float32 that every Partial FC step allocates.

usage: python bench/bench_lean_pfc.py [--quick] [--chunk N] [--upstream PATH] [--no-webface]
"""
from __future__ import annotations

import argparse
import ast
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
LEAN = {"recompute": True, "keep": False}  # case -> config.partial_fc "recompute"
WEBFACE = (512, 1_250_000)  # B, C_local: 10M identities on 8 GPUs
SGD = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)  # arcface_torch's train_v2.py optimizer


def load_upstream(path: str):
    """(PartialFC_V2, CombinedMarginLoss) of the arcface_torch checkout at ``path``, runnable on CPU."""
    from torch import distributed

    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # upstream allocates with .cuda()
    if not distributed.is_initialized():
        store = os.path.join(tempfile.mkdtemp(), "store")
        distributed.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    return import_upstream_pfc(path)


def import_upstream_pfc(path: str):
    """(PartialFC_V2, CombinedMarginLoss) imported from the files of the checkout at ``path``."""
    modules = {}
    for name in ("partial_fc_v2", "losses"):
        spec = importlib.util.spec_from_file_location(f"upstream_{name}", os.path.join(path, f"{name}.py"))
        modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[name])
    return modules["partial_fc_v2"].PartialFC_V2, modules["losses"].CombinedMarginLoss


def make(case: str, classes: int, chunk: int, upstream: str = "", sample_rate: float = 1.0):
    torch.manual_seed(0)
    if case == "materialised":
        return PartialFC_V2(CombinedMarginLoss(64, 1.0, 0.5, 0.0), DIM, classes, sample_rate, False)
    if case in LEAN:
        cls = lean_partial_fc(PartialFC_V2, chunk, LEAN[case])
        return cls(build_margin_loss("arcface"), DIM, classes, sample_rate, False)
    pfc_class, margin_class = load_upstream(upstream)
    return pfc_class(margin_class(64, 1.0, 0.5, 0.0), DIM, classes, sample_rate, False)


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
    base = reset_peak()
    step(pfc, embeddings, labels)
    return memory_kb()[0] * 1024 - base


def reset_peak() -> int:
    """Reset the peak RSS mark to the current RSS; the current RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    return memory_kb()[1] * 1024


def measure_training_step(case: str, batch: int, classes: int, chunk: int, upstream: str, sample_rate: float) -> dict:
    """One classifier training step with SGD momentum state, in this (fresh) process: bytes held by
    weight + momentum before it, peaks of forward+backward and of the optimizer step (each over the
    process before the classifier existed), seconds of the step."""
    small = make(case, 64, chunk, upstream, sample_rate)
    step(small, *inputs(8, 64))
    del small
    before = reset_peak()
    pfc = make(case, classes, chunk, upstream, sample_rate)
    opt = torch.optim.SGD(pfc.parameters(), **SGD)
    embeddings, labels = inputs(batch, classes)

    def forward_backward():
        x = embeddings.clone().requires_grad_(True)
        pfc(x, labels.clone()).backward()

    forward_backward()  # the first step creates the momentum buffer
    opt.step()
    opt.zero_grad(set_to_none=True)
    held = reset_peak() - before
    start = time.perf_counter()
    forward_backward()
    backward_peak = memory_kb()[0] * 1024 - before
    reset_peak()
    opt.step()
    opt.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    optimizer_peak = memory_kb()[0] * 1024 - before
    return {"s": seconds, "held": held, "backward_peak": backward_peak, "optimizer_peak": optimizer_peak}


def in_fresh_process(call: str):
    """The printed result of ``call`` (an expression over this module, ``b``) in a new interpreter."""
    code = f"import sys; sys.path.insert(0, 'bench'); import bench_lean_pfc as b; print(repr({call}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


def peak_growth(case: str, batch: int, classes: int, chunk: int, upstream: str) -> int:
    return in_fresh_process(f"b.measure_here({case!r}, {batch}, {classes}, {chunk}, {upstream!r})")


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


def webface_row(batch: int, classes: int, chunk: int, upstream: str) -> dict:
    """The WebFace42M-scale comparison: lean (both modes) at sample_rate 1.0, upstream's step at 0.1."""
    reference = "upstream" if upstream else "materialised"
    runs = {f"{case} sr=1.0": (case, 1.0) for case in LEAN}
    runs[f"{reference} sr=0.1"] = (reference, 0.1)
    print(f"\nWebFace42M scale: B = {batch}, C_local = {classes}, D = {DIM}, SGD momentum + weight decay "
          "(one step after the one that creates the momentum buffer)")
    print(f"{'case':<22}{'weight+momentum MB':>20}{'fwd+bwd peak MB':>17}{'optimizer peak MB':>19}{'step s':>9}")
    out = {}
    for name, (case, rate) in runs.items():
        got = in_fresh_process(f"b.measure_training_step({case!r}, {batch}, {classes}, {chunk}, {upstream!r}, {rate})")
        out[name] = {"s": round(got["s"], 2), "held_mb": round(got["held"] / MB), "backward_peak_mb": round(got["backward_peak"] / MB),
                     "optimizer_peak_mb": round(got["optimizer_peak"] / MB)}
        row = out[name]
        print(f"{name:<22}{row['held_mb']:>20}{row['backward_peak_mb']:>17}{row['optimizer_peak_mb']:>19}{row['s']:>9.2f}")
    ref = out[f"{reference} sr=0.1"]
    for case in LEAN:
        row = out[f"{case} sr=1.0"]
        row["backward_peak_ratio"] = round(row["backward_peak_mb"] / ref["backward_peak_mb"], 3)
        row["step_peak_ratio"] = round(max(row["backward_peak_mb"], row["optimizer_peak_mb"])
                                       / max(ref["backward_peak_mb"], ref["optimizer_peak_mb"]), 3)
        row["time_ratio"] = round(row["s"] / ref["s"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (smoke run)")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="classes per chunk of the lean path (default: %(default)s)")
    parser.add_argument("--upstream", default="", help="an arcface_torch checkout to compare with (default: none, "
                                                       "the replica's step is the reference)")
    parser.add_argument("--no-webface", action="store_true", help="leave out the WebFace42M-scale row (about 11 GB)")
    args = parser.parse_args()
    if args.quick:
        sizes, series, repeats, chunk = [(64, 4000)], (2000, 8000), 2, min(args.chunk, 1024)
        webface = (64, 20000)
    else:
        sizes, series, repeats, chunk = [(512, 100000), (1024, 200000)], (50000, 100000, 200000, 400000), 3, args.chunk
        webface = WEBFACE
    cases = ["materialised", *LEAN] + (["upstream"] if args.upstream else [])
    reference = "upstream" if args.upstream else "materialised"
    figures = {"chunk": chunk, "dim": DIM, "reference": reference, "threads": torch.get_num_threads(),
               "load_average": list(os.getloadavg())}
    print(f"chunk = {chunk} classes, D = {DIM}, float32, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}; ratios against {reference}")
    print(f"{'(B, C_local)':<18}{'case':<14}{'step s':>9}{'x ref':>8}{'peak MB':>10}{'(B,C) bufs':>12}{'x ref':>8}")
    for batch, classes in sizes:
        secs = times(cases, batch, classes, chunk, args.upstream, repeats)
        peaks = {case: peak_growth(case, batch, classes, chunk, args.upstream) for case in cases}
        buffer = batch * classes * 4
        row = {}
        for case in cases:
            row[case] = {"s": round(secs[case], 3), "peak_mb": round(peaks[case] / MB, 1),
                         "peak_buffers": round(peaks[case] / buffer, 3)}
            print(f"{str((batch, classes)):<18}{case:<14}{secs[case]:>9.3f}{secs[case] / secs[reference]:>8.2f}"
                  f"{peaks[case] / MB:>10.1f}{peaks[case] / buffer:>12.2f}{peaks[case] / peaks[reference]:>8.2f}")
        for case in LEAN:
            row[f"time_ratio_{case}"] = round(secs[case] / secs[reference], 3)
            row[f"memory_ratio_{case}"] = round(peaks[case] / peaks[reference], 3)
        row["keep_vs_recompute_time"] = round(secs["keep"] / secs["recompute"], 3)
        row["weight_grad_floor_ratio"] = round(classes * DIM * 4 / peaks[reference], 3)
        figures[f"{batch}x{classes}"] = row
    batch = sizes[0][0]
    print(f"\nlean (recompute), B = {batch}, chunk = {chunk}: peak growth as C_local grows")
    print(f"{'C_local':>10}{'peak MB':>10}{'weight grad MB':>16}{'above floor MB':>16}")
    flat = {}
    for classes in series:
        peak = peak_growth("recompute", batch, classes, chunk, "")
        floor = classes * DIM * 4
        flat[str(classes)] = {"peak_mb": round(peak / MB, 1), "above_floor_mb": round((peak - floor) / MB, 1)}
        print(f"{classes:>10}{peak / MB:>10.1f}{floor / MB:>16.1f}{(peak - floor) / MB:>16.1f}")
    figures["flat_series"] = flat
    if not args.no_webface:
        figures["webface"] = {"batch": webface[0], "classes": webface[1],
                              "cases": webface_row(*webface, chunk, args.upstream)}
    figures["load_average_end"] = list(os.getloadavg())
    print(json.dumps({"bench": "lean_pfc", "figures": figures}))


if __name__ == "__main__":
    main()
