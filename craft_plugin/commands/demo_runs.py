"""The training half of ``craft-plugin demo``: the synthetic dataset, the two runs through the
plugin hooks, the filter grids and the inactive-filter plot."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Dict, List

import cv2
import numpy as np

import craft_plugin.plugin
from craft_plugin._replica.config import get_config
from craft_plugin._replica.synthetic import synthetic_image
from craft_plugin._replica.train import train, unwrap
from craft_plugin.data.binfile import load_bin
from craft_plugin.data.verification import fold_accuracy
from craft_plugin.data.writer import write_bin, write_rec
from craft_plugin.reactivation.detection import Criterion, summarize
from craft_plugin.reactivation.grid import filter_grid
from craft_plugin.reactivation.layer import find_first_layer

IMAGE_SIZE = 32
BATCH_SIZE = 32
PAIRS = 200          # val.bin pairs, from 40 held-out identities
SETTINGS = {"lr": 0.1, "weight_decay": 3e-2, "margin_list": (1.0, 0.0, 0.35), "batch_size": BATCH_SIZE}


def steps_of(args: argparse.Namespace) -> int:
    return args.identities * args.per_identity // BATCH_SIZE * args.epochs


class InactivityProbe:
    """A plugin that records inactive first-layer filters every ``every`` real steps and ticks a
    progress bar; it changes nothing in training."""

    def __init__(self, every: int, bar: Any):
        self.every, self.bar = every, bar
        self.curve: List[List[int]] = []
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
    for i in range(PAIRS):
        a = int(rng.choice(held_out))
        same = i % 2 == 0
        b = a if same else int(rng.choice([k for k in held_out if k != a]))
        pairs.append((synthetic_image(seed, a, 1000 + i, IMAGE_SIZE), synthetic_image(seed, b, 2000 + i, IMAGE_SIZE), same))
    write_bin(root / "val.bin", pairs)


def run_one(name: str, args: argparse.Namespace, data: Path, out: Path, reactivation: Any) -> Dict[str, Any]:
    import sys

    from tqdm import tqdm

    images = args.identities * args.per_identity
    cfg = get_config(str(out / name), rec=str(data), num_classes=args.identities, num_image=images,
                     num_epoch=args.epochs, seed=args.seed, num_workers=0, frequent=10, val_targets=[],
                     reactivation=reactivation, **SETTINGS)
    steps = steps_of(args)
    started = time.monotonic()
    with tqdm(total=steps, desc=name, unit="step", leave=False, file=sys.stderr) as bar:
        probe = InactivityProbe(max(1, steps // 20), bar)
        result = train(cfg, plugins=[craft_plugin.plugin, probe])
    probe.record(result.global_step)
    backbone = unwrap(result.backbone)
    folds, _ = fold_accuracy(load_bin(str(data / "val.bin"), (IMAGE_SIZE, IMAGE_SIZE)), backbone)
    weight = backbone.conv1.weight.detach()
    inactive = summarize(weight, Criterion())["inactive"]
    history = craft_plugin.plugin.feature("reactivation").reactivator.history if reactivation else []
    cv2.imwrite(str(out / f"{name}_conv1_filters.png"), cv2.cvtColor(filter_grid(weight, inactive), cv2.COLOR_RGB2BGR))
    return {"final_loss": float(np.mean(result.losses[-20:])), "accuracy": float(folds.mean()),
            "accuracy_std": float(folds.std()), "fold_accuracy": [float(a) for a in folds],
            "inactive_final": probe.curve[-1][1], "inactive_curve": probe.curve,
            "checks": len(history), "revived_total": sum(len(r["revived"]) for r in history),
            "steps": result.global_step, "seconds": round(time.monotonic() - started, 1)}


def plot(out: Path, runs: Dict[str, Dict[str, Any]], filters: int = 64) -> str:
    """``inactive_filters.png``: inactive conv1 filters against the step, one line per run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return "skipped (matplotlib is not installed: pip install 'craft-plugin[demo]')"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, run in runs.items():
        steps, counts = zip(*run["inactive_curve"])
        ax.plot(steps, counts, marker="o", label=f"{name} ({run['inactive_final']} at the end)")
    ax.set_title(f"Inactive first-layer filters during training (of {filters}, CRAFT's relative criterion)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("inactive conv1 filters")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max(count for run in runs.values() for _, count in run["inactive_curve"]) + 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = out / "inactive_filters.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def run_demo(args: argparse.Namespace, reactivation: Dict[str, int], report: Any) -> Dict[str, Any]:
    """Dataset, both runs and the pictures; ``{"runs": ..., "plot": path}``."""
    out = Path(args.out)
    data = out / "data"
    write_dataset(data, args.identities, args.per_identity, args.seed)
    print(f"dataset: {data}/train.rec ({args.identities} identities x {args.per_identity}), "
          f"{data}/val.bin ({PAIRS} pairs)", file=report)
    runs = {"baseline": run_one("baseline", args, data, out, None),
            "craft": run_one("craft", args, data, out, reactivation)}
    return {"runs": runs, "plot": plot(out, runs)}
