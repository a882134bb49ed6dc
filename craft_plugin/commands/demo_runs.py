"""The training half of ``craft-plugin demo``: the synthetic dataset, the two runs through the
plugin hooks, their evaluation, the side-by-side filter picture and the inactive-filter plot."""
from __future__ import annotations

import argparse
import math
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

import craft_plugin.plugin
from craft_plugin._replica.config import get_config
from craft_plugin._replica.synthetic import synthetic_image
from craft_plugin._replica.train import train, unwrap
from craft_plugin.data.binfile import load_bin
from craft_plugin.data.verification import fold_accuracy
from craft_plugin.data.writer import write_bin, write_rec
from craft_plugin.reactivation.detection import Criterion, summarize
from craft_plugin.reactivation.grid import Panel, compare_grids, revivals, save_png
from craft_plugin.reactivation.layer import find_first_layer
from craft_plugin.reactivation.options import ReactivationOptions

IMAGE_SIZE = 32
BATCH_SIZE = 32
PAIRS = 200          # val.bin pairs, from 40 held-out identities
EVAL_BATCH = 10      # images per forward pass in the evaluation (upstream's verification batch)
INACTIVE_IN_WORDS = Criterion().in_words()
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


def evaluate(name: str, backbone: Any, data: Path) -> np.ndarray:
    """Per-fold accuracy on ``val.bin``, with a progress bar over the embedding batches."""
    import sys

    from tqdm import tqdm

    pairs = load_bin(str(data / "val.bin"), (IMAGE_SIZE, IMAGE_SIZE))
    batches = sum(math.ceil(len(view) / EVAL_BATCH) for view in pairs[0])
    with tqdm(total=batches, desc=f"{name}: val.bin", unit="batch", leave=False, file=sys.stderr) as bar:
        def tick(*_: Any) -> None:   # a forward hook that returns a value would replace the output
            bar.update(1)

        counting = backbone.register_forward_hook(tick)
        try:
            folds, _ = fold_accuracy(pairs, backbone, EVAL_BATCH)
        finally:
            counting.remove()
    return folds


def run_one(name: str, args: argparse.Namespace, data: Path, out: Path, reactivation: Any) -> Tuple[Dict[str, Any], Panel]:
    """One training run and its evaluation: ``(its report, its conv1 panel for the filter picture)``."""
    import sys

    from tqdm import tqdm

    images = args.identities * args.per_identity
    cfg = get_config(str(out / name), rec=str(data), num_classes=args.identities, num_image=images,
                     num_epoch=args.epochs, seed=args.seed, num_workers=0, frequent=10, val_targets=[],
                     reactivation=reactivation, **SETTINGS)
    steps = steps_of(args)
    started = time.monotonic()
    with tqdm(total=steps, desc=f"{name}: training", unit="step", leave=False, file=sys.stderr) as bar:
        probe = InactivityProbe(max(1, steps // 20), bar)
        result = train(cfg, plugins=[craft_plugin.plugin, probe])
    probe.record(result.global_step)
    backbone = unwrap(result.backbone)
    folds = evaluate(name, backbone, data)
    history = craft_plugin.plugin.feature("reactivation").reactivator.history if reactivation else []
    tensorboard = out / name / "tensorboard"
    record = {"final_loss": float(np.mean(result.losses[-20:])), "accuracy": float(folds.mean()),
              "accuracy_std": float(folds.std()), "fold_accuracy": [float(a) for a in folds],
              "inactive_final": probe.curve[-1][1], "inactive_curve": probe.curve,
              "checks": len(history), "revived_total": sum(len(r["revived"]) for r in history),
              "check_log": [[r["step"], len(r["inactive"]), len(r["revived"])] for r in history],
              "steps": result.global_step, "seconds": round(time.monotonic() - started, 1),
              "model": str(out / name / "model.pt"),
              "tensorboard": str(tensorboard) if tensorboard.is_dir() else None}
    weight = backbone.conv1.weight.detach()
    what = "CRAFT off"
    if reactivation:
        options = ReactivationOptions(**reactivation)
        what = (f"CRAFT checks every {options.every} steps from step {options.start}"
                + (" and at each epoch end" if options.at_epoch_end else ""))
    panel = Panel(weight, f"{name} run: {what}\nconv1 ({'x'.join(map(str, weight.shape))}) at step "
                          f"{result.global_step}, the end of training",
                  summarize(weight, Criterion())["inactive"], revivals(history))
    return record, panel


def inactive_figure(runs: Dict[str, Dict[str, Any]], filters: int = 64) -> Any:
    """The matplotlib figure of ``inactive_filters.png``: on top, inactive conv1 filters against the
    step, one line per run, and what each CRAFT check found; below, the filters each check revived."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax, bars) = plt.subplots(2, 1, figsize=(8, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    colours = {"baseline": "tab:blue", "craft": "tab:orange"}
    for name, run in runs.items():
        steps, counts = zip(*run["inactive_curve"])
        ax.plot(steps, counts, marker="o", markersize=4, color=colours.get(name),
                label=f"{name}: inactive filters ({run['inactive_final']} at the end)")
    log = [entry for run in runs.values() for entry in run["check_log"]]
    if log:
        checks, found, revived = zip(*log)
        ax.scatter(checks, found, marker="x", color="tab:red", zorder=3,
                   label="craft: inactive found at a check (then revived)")
        bars.bar(checks, revived, width=5, color="tab:red")
        bars.plot(checks, [0] * len(checks), "|", color="black", markersize=8, label="a CRAFT check")
        bars.set_title(f"Filters CRAFT revived at each of its {len(checks)} checks ({sum(revived)} in total)",
                       fontsize=10)
        bars.legend(loc="upper right", fontsize=8)
    else:
        bars.set_title("CRAFT made no check in this run", fontsize=10)
    bars.set_ylabel("revived")
    bars.set_xlabel("optimizer step")
    bars.yaxis.set_major_locator(MaxNLocator(integer=True))
    bars.set_ylim(0, max([entry[2] for entry in log] + [1]) + 0.5)
    ax.set_title(f"Inactive conv1 filters (of {filters}) during training\n{textwrap.fill(INACTIVE_IN_WORDS, 80)}",
                 fontsize=10)
    ax.set_ylabel("inactive conv1 filters")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max([count for run in runs.values() for _, count in run["inactive_curve"]]
                       + [entry[1] for entry in log]) + 1)
    for axis in (ax, bars):
        axis.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot(out: Path, runs: Dict[str, Dict[str, Any]]) -> str:
    """Writes ``inactive_filters.png`` (:func:`inactive_figure`); its path, or why it was skipped."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        return "skipped (matplotlib is not installed: pip install 'craft-plugin[demo]')"
    fig = inactive_figure(runs)
    path = out / "inactive_filters.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def run_demo(args: argparse.Namespace, reactivation: Dict[str, int], report: Any) -> Dict[str, Any]:
    """Dataset, both runs and the pictures; ``{"runs": ..., "files": [(path, what it is)]}``."""
    out = Path(args.out)
    data = out / "data"
    write_dataset(data, args.identities, args.per_identity, args.seed)
    print(f"dataset: {data}/train.rec ({args.identities} identities x {args.per_identity}), "
          f"{data}/val.bin ({PAIRS} pairs)", file=report)
    runs, panels = {}, []
    for name, options in (("baseline", None), ("craft", reactivation)):
        runs[name], panel = run_one(name, args, data, out, options)
        panels.append(panel)
    grid = out / "conv1_filters.png"
    save_png(grid, compare_grids(panels, INACTIVE_IN_WORDS))
    files = [(str(data), "the synthetic dataset: train.rec, train.idx, property, val.bin")]
    for name, run in runs.items():
        files.append((run["model"], f"{name} backbone (craft-plugin inspect / export read it)"))
    files.append((str(grid), "conv1 filters of both runs side by side, one colour scale"))
    plotted = plot(out, runs)
    if plotted.endswith(".png"):
        files.append((plotted, "inactive filters over training, CRAFT's checks and revivals"))
    else:
        print(f"inactive_filters.png: {plotted}", file=report)
    for name, run in runs.items():
        if run["tensorboard"]:
            files.append((run["tensorboard"], f"{name} TensorBoard logs (tensorboard --logdir {out})"))
    return {"runs": runs, "files": files}
