"""CRAFT evidence: seeds x arms x weight decays on the replica, each arm paired with the
baseline of the same seed.

Arms: ``baseline`` (CRAFT off); ``craft`` (our defaults); ``random`` (strategy "random",
RandomOut-style re-initialisation); ``no_followers`` (reset_followers False: only the filter and
its optimizer rows); ``activation`` (criterion "activation": ReDo-style mean |BatchNorm output|
relative to the layer mean). CRAFT arms check every ``--every`` real steps (and at epoch ends),
as the demo does, since the runs are short. Training is the demo's (the mini iresnet, SGD lr 0.1,
CosFace s 64 m 0.35) on its synthetic identities, or on a ``.rec`` folder with ``--rec``; seed s
seeds the training and the plugin's generator.

Per arm: the fraction of inactive conv1 filters over training under the default weight-norm
criterion (the same yardstick for every arm; final value and time average), revivals, final loss
(mean of the last 20 steps), 10-fold verification accuracy on pairs of held-out identities; each
as mean +- std over seeds. Per CRAFT arm: the paired difference to the baseline of the same seed,
mean and 95% t-interval over seeds (mean +- t(0.975, S-1) sd / sqrt(S)).

Writes ``study.json`` and ``inactive_fraction.png`` under ``--out``, prints the table and ends
with one JSON line; ``--write-docs`` also rewrites the marked study section of docs/craft.md and
docs/craft_study.png.

usage: python bench/study_craft.py [--quick] [--seeds 5] [--weight-decays 5e-4 3e-2]
       [--rec FOLDER --bin PAIRS.bin] [--jobs 2] [--write-docs]
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

import craft_plugin.plugin
from craft_plugin._replica.config import get_config
from craft_plugin._replica.train import train, unwrap
from craft_plugin.commands.demo import DEMO_REACTIVATION
from craft_plugin.commands.demo_runs import IMAGE_SIZE, write_dataset
from craft_plugin.data.binfile import load_bin
from craft_plugin.data.verification import test as verify
from craft_plugin.reactivation.detection import Criterion, summarize
from craft_plugin.reactivation.layer import find_first_layer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "craft.md"
DOCS_PLOT = ROOT / "docs" / "craft_study.png"
BEGIN, END = "<!-- study_craft:begin -->", "<!-- study_craft:end -->"

ARMS: Dict[str, Optional[dict]] = {
    "baseline": None,
    "craft": {},
    "random": {"strategy": "random"},
    "no_followers": {"reset_followers": False},
    "activation": {"criterion": "activation"},
}
DEMO_WEIGHT_DECAY, UPSTREAM_WEIGHT_DECAY = 3e-2, 5e-4
FULL = {"seeds": 5, "identities": 64, "per_identity": 16, "batch_size": 16, "epochs": 4}
QUICK = {"seeds": 2, "identities": 8, "per_identity": 8, "batch_size": 16, "epochs": 2, "every": 2}
YARDSTICK = Criterion()  # the inactive fraction every arm is measured by


class FractionProbe:
    """A plugin recording the inactive fraction of the first conv every ``every`` real steps."""

    def __init__(self, every: int):
        self.every = every
        self.curve: List[List[float]] = []
        self.layer = None

    def on_train_start(self, *, backbone: Any, **_: Any) -> None:
        self.layer = find_first_layer(backbone)
        self.record(0)

    def on_optimizer_step(self, *, global_step: int, **_: Any) -> None:
        if global_step % self.every == 0:
            self.record(global_step)

    def record(self, step: int) -> None:
        if not self.curve or self.curve[-1][0] != step:
            self.curve.append([step, summarize(self.layer.conv.weight, YARDSTICK)["fraction"]])


@functools.lru_cache(maxsize=1)
def pairs(path: str, image_size: tuple):
    """The verification pairs, decoded once per worker process."""
    return load_bin(path, image_size)


def run_arm(task: Dict[str, Any]) -> Dict[str, Any]:
    """One training run (in a worker process): its curve, revivals, loss and accuracy."""
    torch.set_num_threads(task["threads"])
    logging.getLogger().setLevel(logging.WARNING)
    reactivation = None
    if task["arm_options"] is not None:
        reactivation = {**task["schedule"], **task["arm_options"], "seed": task["seed"]}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as output:
        cfg = get_config(output, rec=task["rec"], num_classes=task["num_classes"], num_image=task["num_image"],
                         batch_size=task["batch_size"], num_epoch=task["epochs"], lr=0.1,
                         weight_decay=task["weight_decay"], margin_list=(1.0, 0.0, 0.35), seed=task["seed"],
                         num_workers=0, frequent=10 ** 9, val_targets=[], reactivation=reactivation)
        probe = FractionProbe(task["probe_every"])
        result = train(cfg, plugins=[craft_plugin.plugin, probe])
    probe.record(result.global_step)
    history = craft_plugin.plugin.feature("reactivation").reactivator.history if reactivation else []
    accuracy, _, _ = verify(pairs(task["bin"], tuple(task["image_size"])), unwrap(result.backbone))
    curve = np.array(probe.curve)
    return {"arm": task["arm"], "weight_decay": task["weight_decay"], "seed": task["seed"],
            "curve": probe.curve, "inactive_final": float(curve[-1, 1]), "inactive_mean": float(curve[:, 1].mean()),
            "revived": sum(len(r["revived"]) for r in history), "final_loss": float(np.mean(result.losses[-20:])),
            "accuracy": float(accuracy), "steps": result.global_step, "seconds": time.monotonic() - started}


def mean_std(values: List[float]) -> List[Optional[float]]:
    a = np.asarray(values, dtype=float)
    return [float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else None]


def t_interval(diffs: List[float]) -> List[Optional[float]]:
    """[mean, low, high]: the 95% t-interval of the mean paired difference (None below 2 seeds)."""
    from scipy import stats

    a = np.asarray(diffs, dtype=float)
    if a.size < 2:
        return [float(a.mean()), None, None]
    half = stats.t.ppf(0.975, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size)
    return [float(a.mean()), float(a.mean() - half), float(a.mean() + half)]


METRICS = ("inactive_final", "inactive_mean", "revived", "final_loss", "accuracy")
PAIRED = ("accuracy", "final_loss", "inactive_final")


def summarise(runs: List[Dict[str, Any]], weight_decays: List[float]) -> Dict[str, Dict[str, Any]]:
    """Per ``arm@wd``: metrics as [mean, std], the curve's mean/std per step, paired differences."""
    out = {}
    for wd in weight_decays:
        baseline = {r["seed"]: r for r in runs if r["weight_decay"] == wd and r["arm"] == "baseline"}
        for arm in ARMS:
            mine = sorted((r for r in runs if r["weight_decay"] == wd and r["arm"] == arm), key=lambda r: r["seed"])
            curves = np.array([[f for _, f in r["curve"]] for r in mine])
            entry = {m: mean_std([r[m] for r in mine]) for m in METRICS}
            entry.update({"seeds": len(mine), "steps": [s for s, _ in mine[0]["curve"]],
                          "curve_mean": curves.mean(0).tolist(), "curve_std": curves.std(0).tolist()})
            if arm != "baseline":
                entry["paired"] = {m: t_interval([r[m] - baseline[r["seed"]][m] for r in mine]) for m in PAIRED}
            out[f"{arm}@{wd:g}"] = entry
    return out


def fmt(pair: List[Optional[float]], digits: int) -> str:
    mean, std = pair
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_diff(triple: List[Optional[float]], digits: int) -> str:
    mean, low, high = triple
    if low is None:
        return f"{mean:+.{digits}f}"
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def table(summary: Dict[str, Dict[str, Any]]) -> List[str]:
    """The study as a Markdown table (also what is printed)."""
    lines = ["| wd | arm | inactive final | inactive mean | revived | final loss | accuracy | "
             "Δ accuracy [95% CI] | Δ final loss [95% CI] | Δ inactive final [95% CI] |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, e in summary.items():
        arm, wd = key.split("@")
        paired = e.get("paired")
        diffs = ([fmt_diff(paired["accuracy"], 3), fmt_diff(paired["final_loss"], 3),
                  fmt_diff(paired["inactive_final"], 3)] if paired else ["", "", ""])
        lines.append(f"| {wd} | {arm} | {fmt(e['inactive_final'], 3)} | {fmt(e['inactive_mean'], 3)} | "
                     f"{fmt(e['revived'], 1)} | {fmt(e['final_loss'], 3)} | {fmt(e['accuracy'], 3)} | "
                     + " | ".join(diffs) + " |")
    return lines


def verdicts(summary: Dict[str, Dict[str, Any]]) -> List[str]:
    """One sentence per CRAFT arm: does the accuracy interval exclude zero?"""
    lines = []
    for key, e in summary.items():
        if "paired" not in e or e["paired"]["accuracy"][1] is None:
            continue
        mean, low, high = e["paired"]["accuracy"]
        if low > 0:
            word = "higher than the baseline"
        elif high < 0:
            word = "lower than the baseline"
        else:
            word = "not distinguishable from the baseline (the interval contains 0)"
        lines.append(f"- `{key}`: accuracy {word}: {mean:+.3f} [{low:+.3f}, {high:+.3f}] over {e['seeds']} seeds.")
    return lines


def check_steps(every: int, start: int, steps: int, epochs: int) -> List[int]:
    """The steps at which the CRAFT arms check: every ``every`` steps from ``start``, and each epoch
    end from ``start`` on (a step that is both is one line on the plot)."""
    per_epoch = steps // epochs
    ends = range(per_epoch, steps + 1, per_epoch)
    return sorted({s for s in range(start, steps + 1, every)} | {s for s in ends if s >= start})


def plot(summary: Dict[str, Dict[str, Any]], weight_decays: List[float], path: Path, title: str,
         checks: List[int]) -> None:
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(weight_decays), figsize=(5.5 * len(weight_decays), 4.3), squeeze=False,
                             sharey=True)
    for ax, wd in zip(axes[0], weight_decays):
        for k, step in enumerate(checks):
            ax.axvline(step, color="grey", linestyle=":", linewidth=0.8,
                       label="a check of the CRAFT arms" if k == 0 else None)
        flat = True
        for arm in ARMS:
            e = summary[f"{arm}@{wd:g}"]
            mean, std = np.array(e["curve_mean"]), np.array(e["curve_std"])
            flat = flat and not mean.any()
            line, = ax.plot(e["steps"], mean, label=arm)
            ax.fill_between(e["steps"], mean - std, mean + std, color=line.get_color(), alpha=0.15)
        if flat:
            ax.text(0.62, 0.45, "no filter became inactive in any arm:\nall lines lie on 0", transform=ax.transAxes,
                    ha="center", va="center", fontsize=9, bbox={"facecolor": "white", "edgecolor": "none"})
        ax.set_title(f"weight decay {wd:g}")
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    axes[0][0].set_ylabel("inactive conv1 filters (fraction)")
    fig.suptitle(f"{title}\n{textwrap.fill(YARDSTICK.in_words(), 50 * len(weight_decays))}", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def write_docs(section: List[str]) -> None:
    """Replace the text between the study markers of docs/craft.md (atomically)."""
    text = DOCS.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise SystemExit(f"{DOCS}: expected one {BEGIN} ... {END} section to rewrite")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    tmp = DOCS.with_suffix(".md.tmp")
    tmp.write_text(head + BEGIN + "\n" + "\n".join(section) + "\n" + END + tail)
    os.replace(tmp, DOCS)


def dataset(args: argparse.Namespace, out: Path) -> Dict[str, Any]:
    """The training records and the verification pairs: the demo's synthetic ones, or ``--rec``."""
    if args.rec is None:
        data = out / "data"
        write_dataset(data, args.identities, args.per_identity, args.data_seed)
        return {"rec": str(data), "bin": str(data / "val.bin"), "num_classes": args.identities,
                "num_image": args.identities * args.per_identity, "image_size": (IMAGE_SIZE, IMAGE_SIZE)}
    folder = Path(args.rec)
    if args.bin is None:
        raise SystemExit("--rec needs --bin PAIRS.bin (verification pairs, e.g. lfw.bin)")
    for name in ("train.rec", "train.idx", "property"):
        if not (folder / name).is_file():
            raise SystemExit(f"--rec {folder}: {name} is missing (expected train.rec, train.idx, property)")
    num_classes, height, width = (int(v) for v in (folder / "property").read_text().split(",")[:3])
    with open(folder / "train.idx") as idx:
        num_image = sum(1 for line in idx if line.strip()) - 1  # the header record is not an image
    return {"rec": str(folder), "bin": args.bin, "num_classes": num_classes, "num_image": num_image,
            "image_size": (height, width)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds: 2 seeds, one weight decay, 8 steps")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--weight-decays", type=float, nargs="+")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--identities", type=int)
    parser.add_argument("--per-identity", type=int)
    parser.add_argument("--every", type=int, help=f"CRAFT check interval (default: the demo's, {DEMO_REACTIVATION['every']})")
    parser.add_argument("--data-seed", type=int, default=2048, help="seed of the synthetic identities (the demo's)")
    parser.add_argument("--rec", help="a folder with train.rec/train.idx/property instead of synthetic data")
    parser.add_argument("--bin", help="verification pairs (.bin) for --rec")
    parser.add_argument("--jobs", type=int, help="parallel runs (default: 1 with --quick, else min(2, cores))")
    parser.add_argument("--out", help="folder for study.json and the plot (default: a new temporary folder)")
    parser.add_argument("--write-docs", action="store_true", help="rewrite the study section of docs/craft.md")
    args = parser.parse_args()
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.every = args.every or DEMO_REACTIVATION["every"]
    args.weight_decays = args.weight_decays or ([DEMO_WEIGHT_DECAY] if args.quick
                                                else [UPSTREAM_WEIGHT_DECAY, DEMO_WEIGHT_DECAY])
    args.jobs = args.jobs or (1 if args.quick else max(1, min(2, os.cpu_count() or 1)))
    cores = os.cpu_count() or 1
    threads = 1  # a run of the mini net gains little from a 2nd thread, and OpenMP's spinning costs a lot on a busy machine

    out = Path(args.out or tempfile.mkdtemp(prefix="study_craft_"))
    out.mkdir(parents=True, exist_ok=True)
    data = dataset(args, out)
    steps = data["num_image"] // args.batch_size * args.epochs
    tasks = [{**data, "arm": arm, "arm_options": options, "weight_decay": wd, "seed": seed,
              "schedule": {"every": args.every, "start": args.every}, "batch_size": args.batch_size,
              "epochs": args.epochs, "probe_every": max(1, steps // 20), "threads": threads}
             for seed in range(args.seeds) for wd in args.weight_decays for arm, options in ARMS.items()]
    started = time.monotonic()
    load = os.getloadavg()[0]
    if args.jobs == 1:
        runs = [run_arm(task) for task in tasks]
    else:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            runs = list(pool.map(run_arm, tasks))
    seconds = time.monotonic() - started
    summary = summarise(runs, args.weight_decays)

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = (f"{platform.machine()} {platform.system()}, {cores} CPU cores, torch {torch.__version__}, "
               f"{args.jobs} runs in parallel x {threads} thread(s), load average {load:.1f} at start")
    data_name = f"--rec {args.rec}" if args.rec else f"synthetic {args.identities} identities x {args.per_identity}"
    setting = (f"{data_name}, batch {args.batch_size}, {args.epochs} epochs ({steps} steps), SGD lr 0.1, "
               f"CosFace; CRAFT checks every {args.every} steps from step {args.every} and at epoch ends; "
               f"{args.seeds} seeds")
    title = f"Inactive conv1 filters, mean ± std over {args.seeds} seeds"
    plot_path = out / "inactive_fraction.png"
    checks = check_steps(args.every, args.every, steps, args.epochs)
    plot(summary, args.weight_decays, plot_path, title, checks)
    lines = table(summary)
    print(f"{setting}\n{machine}; {len(runs)} runs in {seconds:.0f} s\n")
    print("\n".join(lines))
    print("\n" + "\n".join(verdicts(summary)))
    print(f"\nplot: {plot_path}")
    (out / "study.json").write_text(json.dumps({"setting": setting, "machine": machine, "when": when,
                                                "summary": summary, "runs": runs}, indent=1))
    if args.write_docs:
        plot(summary, args.weight_decays, DOCS_PLOT, title, checks)
        options = [a for a in sys.argv[1:] if a != "--write-docs"]
        if "--out" in options:  # where the scratch files went is not part of the recipe
            del options[options.index("--out"):options.index("--out") + 2]
        command = " ".join(["python bench/study_craft.py --write-docs", *options])
        write_docs([f"Written by `{command}` on {when}: {machine}; {len(runs)} runs in {seconds / 60:.1f} min.",
                    "", f"Setting: {setting}.", "", *lines, "", *verdicts(summary), "",
                    f"![{title}]({DOCS_PLOT.name})"])
        print(f"docs: {DOCS} and {DOCS_PLOT} rewritten")
    figures = {key: {**{m: e[m][0] for m in METRICS},
                     **{f"d_{m}": e["paired"][m] for m in PAIRED if "paired" in e}}
               for key, e in summary.items()}
    print(json.dumps({"bench": "study_craft", "seeds": args.seeds, "steps": steps, "runs": len(runs),
                      "seconds": round(seconds, 1), "arms": figures}))


if __name__ == "__main__":
    main()
