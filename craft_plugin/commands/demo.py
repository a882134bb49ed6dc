"""``craft-plugin demo``: baseline vs CRAFT on a synthetic identity dataset, on the CPU.

It writes a real ``train.rec``/``train.idx``/``property`` and a ``val.bin`` (pairs of held-out
identities), trains the mini arcface_torch pipeline twice with the same seed through the same
hooks a patched upstream run uses (baseline, then ``config.reactivation`` set), and compares final
loss, verification accuracy and inactive first-layer filters over time. The training setting (SGD
lr 0.1, weight decay 3e-2, CosFace) is one where the baseline loses first-layer filters; CRAFT is
checked every 50 steps from step 50 because the run is short (its production default is every 1000);
``--craft-every``/``--craft-start`` change that.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import cv2
import numpy as np
import torch

import craft_plugin.plugin
from craft_plugin.cli import print_json
from craft_plugin.data.binfile import load_bin
from craft_plugin.data.verification import test as verify
from craft_plugin.data.writer import write_bin, write_rec
from craft_plugin.errors import ConfigError
from craft_plugin._replica.config import get_config
from craft_plugin._replica.synthetic import synthetic_image
from craft_plugin._replica.train import train, unwrap
from craft_plugin.reactivation.detection import Criterion, summarize
from craft_plugin.reactivation.grid import filter_grid
from craft_plugin.reactivation.layer import find_first_layer
from craft_plugin.reactivation.options import parse_options

DEMO_REACTIVATION = {"every": 50, "start": 50}
IMAGE_SIZE = 32


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="baseline vs CRAFT on synthetic identities (a few minutes on CPU)",
                       description=__doc__)
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--epochs", type=int, default=14, help="epochs per run (default 14, 448 steps)")
    p.add_argument("--identities", type=int, default=64)
    p.add_argument("--per-identity", type=int, default=16)
    p.add_argument("--seed", type=int, default=2048)
    p.add_argument("--craft-every", type=int, default=DEMO_REACTIVATION["every"],
                   help=f"config.reactivation.every of the CRAFT run (default {DEMO_REACTIVATION['every']})")
    p.add_argument("--craft-start", type=int, default=DEMO_REACTIVATION["start"],
                   help=f"config.reactivation.start of the CRAFT run (default {DEMO_REACTIVATION['start']})")
    p.add_argument("--json", action="store_true", help="print the comparison as one JSON object (last line)")
    p.set_defaults(run=run)


class InactivityProbe:
    """A plugin that records inactive first-layer filters every ``every`` real steps and ticks a
    progress bar; it changes nothing in training."""

    def __init__(self, every: int, bar: Any):
        self.every, self.bar = every, bar
        self.curve: List[List[float]] = []
        self.layer = None

    def on_train_start(self, *, backbone: Any, **_: Any) -> None:
        self.layer = find_first_layer(backbone)
        self.record(0)

    def record(self, step: int) -> None:
        if self.curve and self.curve[-1][0] == step:
            return
        self.curve.append([step, len(summarize(self.layer.conv.weight, Criterion())["inactive"])])

    def on_optimizer_step(self, *, global_step: int, **_: Any) -> None:
        self.bar.update(1)
        if global_step % self.every == 0:
            self.record(global_step)


def write_dataset(root: Path, identities: int, per_identity: int, seed: int) -> None:
    images = ((synthetic_image(seed, k, j, IMAGE_SIZE), k) for k in range(identities) for j in range(per_identity))
    write_rec(root, images)
    rng = np.random.default_rng(seed)
    held_out = range(identities, identities + 40)
    pairs = []
    for i in range(200):
        a = int(rng.choice(held_out))
        same = i % 2 == 0
        b = a if same else int(rng.choice([k for k in held_out if k != a]))
        pairs.append((synthetic_image(seed, a, 1000 + i, IMAGE_SIZE), synthetic_image(seed, b, 2000 + i, IMAGE_SIZE), same))
    write_bin(root / "val.bin", pairs)


def run_one(name: str, args: argparse.Namespace, data: Path, out: Path, reactivation: Any) -> Dict[str, Any]:
    from tqdm import tqdm

    images = args.identities * args.per_identity
    cfg = get_config(str(out / name), rec=str(data), num_classes=args.identities, num_image=images,
                     batch_size=32, num_epoch=args.epochs, lr=0.1, weight_decay=3e-2,
                     margin_list=(1.0, 0.0, 0.35), seed=args.seed, num_workers=0, frequent=10,
                     val_targets=[], reactivation=reactivation)
    steps = images // 32 * args.epochs
    started = time.monotonic()
    with tqdm(total=steps, desc=name, unit="step", leave=False) as bar:
        probe = InactivityProbe(max(1, steps // 20), bar)
        result = train(cfg, plugins=[craft_plugin.plugin, probe])
    probe.record(result.global_step)
    backbone = unwrap(result.backbone)
    accuracy, std, _ = verify(load_bin(str(data / "val.bin"), (IMAGE_SIZE, IMAGE_SIZE)), backbone)
    weight = backbone.conv1.weight.detach()
    history = craft_plugin.plugin.feature("reactivation").reactivator.history if reactivation else []
    cv2.imwrite(str(out / f"{name}_conv1_filters.png"), cv2.cvtColor(filter_grid(weight), cv2.COLOR_RGB2BGR))
    return {"final_loss": float(np.mean(result.losses[-20:])), "accuracy": accuracy, "accuracy_std": std,
            "inactive_final": probe.curve[-1][1], "inactive_curve": probe.curve,
            "checks": len(history), "revived_total": sum(len(r["revived"]) for r in history),
            "steps": result.global_step,
            "seconds": round(time.monotonic() - started, 1)}


def plot(out: Path, runs: Dict[str, Dict[str, Any]]) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "skipped (matplotlib is not installed: pip install 'craft-plugin[demo]')"
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, run in runs.items():
        steps, counts = zip(*run["inactive_curve"])
        ax.plot(steps, counts, marker="o", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("inactive conv1 filters (of 64)")
    ax.legend()
    fig.tight_layout()
    path = out / "inactive_filters.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def run(args: argparse.Namespace) -> int:
    logging.getLogger().setLevel(logging.WARNING)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    reactivation = {"every": args.craft_every, "start": args.craft_start}
    try:
        parse_options(reactivation)
    except ConfigError as error:
        print(f"craft-plugin demo: --craft-every/--craft-start: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    data = out / "data"
    write_dataset(data, args.identities, args.per_identity, args.seed)
    print(f"dataset: {data}/train.rec ({args.identities} identities x {args.per_identity}), {data}/val.bin (200 pairs)")
    runs = {"baseline": run_one("baseline", args, data, out, None),
            "craft": run_one("craft", args, data, out, reactivation)}
    plot_path = plot(out, runs)
    print(f"\n{'run':<10}{'final loss':>12}{'val acc':>10}{'inactive conv1':>16}{'checks':>8}{'revived':>9}{'time s':>8}")
    for name, r in runs.items():
        print(f"{name:<10}{r['final_loss']:>12.3f}{r['accuracy']:>10.3f}{r['inactive_final']:>12d}/64"
              f"{r['checks']:>8d}{r['revived_total']:>9d}{r['seconds']:>8.1f}")
    print("\ninactive conv1 filters over training (step: baseline / craft):")
    print("  " + "  ".join(f"{b[0]}: {b[1]}/{c[1]}" for b, c in zip(runs["baseline"]["inactive_curve"],
                                                                 runs["craft"]["inactive_curve"])))
    print(f"\nfilter grids: {out}/baseline_conv1_filters.png, {out}/craft_conv1_filters.png; plot: {plot_path}; "
          f"TensorBoard: {out}/<run>/tensorboard")
    if args.json:
        print_json({"settings": {"epochs": args.epochs, "identities": args.identities,
                                 "per_identity": args.per_identity, "seed": args.seed,
                                 "reactivation": reactivation, "weight_decay": 3e-2, "lr": 0.1},
                    "runs": runs})
    return 0
