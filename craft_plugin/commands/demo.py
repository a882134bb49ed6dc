"""craft-plugin demo: baseline vs CRAFT on a synthetic identity dataset, on the CPU.

It writes a real train.rec/train.idx/property and a val.bin (pairs of held-out identities), trains
the mini arcface_torch pipeline twice with the same seed through the same hooks a patched upstream
run uses (baseline, then config.reactivation set), and compares final loss, verification accuracy
(+- std over 10 folds, and whether the difference is within noise, paired over the same folds) and
inactive first-layer filters over time. The training setting (SGD lr 0.1, weight decay 3e-2,
CosFace) is one where the baseline loses first-layer filters; CRAFT is checked every 50 steps from
step 50 because the run is short (its production default is every 1000); --craft-every and
--craft-start change that. --write-docs docs/demo.md writes the docs page from this run.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from pathlib import Path

from craft_plugin.cli import UsageError, human, output_path, print_json

DEMO_REACTIVATION = {"every": 50, "start": 50}
RESULT_OPTIONS = ("epochs", "identities", "per_identity", "seed", "craft_every", "craft_start")
PICTURES = ("conv1_filters.png", "inactive_filters.png")   # what --write-docs copies beside the page


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="baseline vs CRAFT on synthetic identities (minutes on a CPU)",
                       description=__doc__)
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--epochs", type=int, default=14, help="epochs per run (default 14, 448 steps)")
    p.add_argument("--identities", type=int, default=64,
                   help="identities in the synthetic train.rec (val.bin pairs come from 40 other identities)")
    p.add_argument("--per-identity", type=int, default=16, help="training images per identity")
    p.add_argument("--seed", type=int, default=2048, help="seed of the synthetic data and of both runs")
    p.add_argument("--craft-every", type=int, default=DEMO_REACTIVATION["every"],
                   help=f"config.reactivation.every of the CRAFT run (default {DEMO_REACTIVATION['every']})")
    p.add_argument("--craft-start", type=int, default=DEMO_REACTIVATION["start"],
                   help=f"config.reactivation.start of the CRAFT run (default {DEMO_REACTIVATION['start']})")
    p.add_argument("--write-docs", metavar="PATH", help="also write the docs page (docs/demo.md) from this run")
    p.add_argument("--json", action="store_true", help="print only one JSON document on stdout")
    p.set_defaults(run=run)


def check_sizes(args: argparse.Namespace) -> None:
    from craft_plugin.commands.demo_runs import BATCH_SIZE

    for option, value, low in (("--epochs", args.epochs, 1), ("--identities", args.identities, 2),
                               ("--per-identity", args.per_identity, 1)):
        if value < low:
            raise UsageError(f"{option} {value} is not allowed: expected an integer >= {low}")
    if args.identities * args.per_identity < BATCH_SIZE:
        raise UsageError(f"--identities {args.identities} x --per-identity {args.per_identity} is not allowed: "
                         f"expected at least {BATCH_SIZE} images (one batch)")


def docs_command(args: argparse.Namespace) -> str:
    """The command line a docs page cites: the options that change the results (not --out or
    --json, which only say where the files and the report go) and the page, relative to the
    working folder, so that the page names no folder of a particular machine."""
    defaults = build_defaults()
    given = [f"--{name.replace('_', '-')} {getattr(args, name)}" for name in RESULT_OPTIONS
             if getattr(args, name) != defaults[name]]
    page = Path(args.write_docs).resolve()
    inside = page.is_relative_to(Path.cwd())   # a page outside the working folder is cited by its name
    return " ".join(["craft-plugin demo", *given, f"--write-docs {page.relative_to(Path.cwd()) if inside else page.name}"])


def build_defaults() -> dict:
    """The demo's option defaults, read from its parser (their one source)."""
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return vars(parser.parse_args(["demo"]))


def write_docs(args: argparse.Namespace, docs: Path, summary: dict, started: str, seconds: float) -> list:
    """The docs page and, beside it, copies of the two pictures it shows (each replaced atomically);
    ``[(path, what)]``."""
    from craft_plugin.commands import demo_report

    written = []
    pictures = {}
    for name in PICTURES:
        if not (Path(args.out) / name).is_file():   # the plot without matplotlib
            continue
        copy = docs.with_name(f"{docs.stem}_{name}")
        tmp = copy.with_name(f".{copy.name}.tmp-{os.getpid()}")
        shutil.copyfile(Path(args.out) / name, tmp)
        os.replace(tmp, copy)
        pictures[name] = copy.name
        written.append((str(copy), f"copy of {name} for the docs page"))
    tmp = docs.with_name(f".{docs.name}.tmp-{os.getpid()}")
    tmp.write_text(demo_report.markdown(summary, docs_command(args), started, seconds, pictures), encoding="utf-8")
    os.replace(tmp, docs)
    return [(str(docs), "the docs page of this run")] + written


def run(args: argparse.Namespace) -> int:
    # OpenMP threads that spin while they wait cost far more than their work when other jobs share
    # the cores (2 cores at load 9-14: about 5 s per step spinning, 0.5 s passive); read when torch loads
    # its OpenMP, so it acts when torch is not imported yet (the CLI); it changes no result
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from craft_plugin.commands import demo_report
    from craft_plugin.commands.demo_runs import SETTINGS, run_demo, steps_of
    from craft_plugin.errors import ConfigError
    from craft_plugin.reactivation.options import parse_options

    reactivation = {"every": args.craft_every, "start": args.craft_start}
    try:
        parse_options(reactivation)
    except ConfigError as error:
        raise UsageError(f"--craft-every/--craft-start: {error}") from error
    check_sizes(args)
    output_path("--out", args.out)
    docs = output_path("--write-docs", args.write_docs) if args.write_docs else None
    report = human(args)
    steps = steps_of(args)
    if args.craft_start > steps:
        print(f"note: the runs have {steps} steps and CRAFT's first check is at step {args.craft_start} "
              f"(--craft-start): CRAFT never runs, so both runs are identical; use more --epochs", file=report)
    logging.getLogger().setLevel(logging.WARNING)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    started = f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} at load average {os.getloadavg()[0]:.1f}"
    clock = time.monotonic()
    result = run_demo(args, reactivation, report)
    runs = result["runs"]
    paired = demo_report.paired_difference(runs["craft"]["fold_accuracy"], runs["baseline"]["fold_accuracy"])
    print("", *demo_report.table(runs), sep="\n", file=report)
    print(f"\n{demo_report.verdict(paired)}", file=report)
    print(f"\ninactive conv1 filters over training (step: baseline / craft):\n  {demo_report.curve_line(runs)}",
          file=report)
    print(f"\nCRAFT's checks (step: inactive found / revived):\n  {demo_report.checks_line(runs['craft'])}",
          file=report)
    files = result["files"]
    summary = {"settings": {"epochs": args.epochs, "identities": args.identities, "per_identity": args.per_identity,
                            "seed": args.seed, "reactivation": reactivation,
                            "weight_decay": SETTINGS["weight_decay"], "lr": SETTINGS["lr"]},
               "runs": runs, "paired": paired}
    if docs:
        files += write_docs(args, docs, summary, started, time.monotonic() - clock)
    summary["files"] = [{"path": path, "what": what} for path, what in files]
    print("\nfiles written:", *(f"  {path}: {what}" for path, what in files), sep="\n", file=report)
    if args.json:
        print_json(summary)
    return 0
