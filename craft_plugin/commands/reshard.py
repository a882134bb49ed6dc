"""craft-plugin reshard RUN_DIR OUT_DIR --world-size N: a run's checkpoint_gpu_{rank}.pt files
re-split for N ranks, so that it resumes on another GPU count; --merge writes one file with the
whole classifier instead. The Partial FC weight and its optimizer state are rebuilt in
class order and cut as PartialFC_V2 cuts classes for N ranks; backbone, its optimizer state, lr
scheduler, epoch, global step and plugin state are carried over, BatchNorm running statistics
from rank 0. An inconsistent set is refused (exit 2) and nothing is written."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from craft_plugin.cli import print_json

# what every output rank gets from source rank 0, for the summary
FROM_RANK_0 = ("state_dict_backbone (with BatchNorm running statistics)",
               "backbone optimizer state", "state_lr_scheduler", "plugin state (craft_plugin)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reshard", help="re-split a run's per-rank checkpoints for another GPU count",
                       description=__doc__)
    p.add_argument("run_dir", help="folder with checkpoint_gpu_0.pt .. checkpoint_gpu_{M-1}.pt")
    p.add_argument("out", help="output folder (with --merge: the output file)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--world-size", type=int, help="number of ranks to write checkpoints for")
    mode.add_argument("--merge", action="store_true", help="write one file with the whole classifier")
    p.add_argument("--num-classes", type=int, help="the run's config.num_classes: checks that no last rank is missing")
    p.add_argument("--json", action="store_true", help="print only a JSON summary on stdout")
    p.set_defaults(run=run)


def out_paths(args: argparse.Namespace) -> list:
    """The files to write; refuses an output folder that already holds checkpoints (a mixed set)."""
    from craft_plugin.checkpoints import CHECKPOINT_PATTERN, CheckpointSetError, checkpoint_name

    out = Path(args.out)
    if args.merge:
        if out.is_dir():
            raise CheckpointSetError(f"{out}: is a folder; with --merge give the output file, e.g. {out / 'merged.pt'}")
        return [out]
    if args.world_size < 1:
        raise CheckpointSetError(f"--world-size {args.world_size}: expected an integer >= 1")
    if out.exists() and not out.is_dir():
        raise CheckpointSetError(f"{out}: exists and is not a folder")
    if out.is_dir():
        present = sorted(p.name for p in out.iterdir() if CHECKPOINT_PATTERN.fullmatch(p.name))
        if present:
            raise CheckpointSetError(f"{out}: already holds {present}; give an empty or new folder")
    return [out / checkpoint_name(rank) for rank in range(args.world_size)]


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from craft_plugin.checkpoints import (FC_WEIGHT, CheckpointSetError, atomic_save_all, class_split,
                                          fc_optimizer_state, merge_run, per_class_keys, split)

    try:
        paths = out_paths(args)
        merged = merge_run(Path(args.run_dir), progress=lambda it: tqdm(it, desc="read", unit="rank", file=sys.stderr),
                           num_classes=args.num_classes)
    except CheckpointSetError as exc:
        print(f"craft-plugin reshard: {exc}; nothing written", file=sys.stderr)
        return 2
    num_classes = merged["num_classes"]
    weight = merged["state_dict_softmax_fc"][FC_WEIGHT]
    per_class = per_class_keys(fc_optimizer_state(merged), weight)
    outputs = [merged] if args.merge else split(merged, args.world_size)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    atomic_save_all(zip(outputs, paths),
                    progress=lambda it: tqdm(it, total=len(paths), desc="write", unit="file", file=sys.stderr))
    summary = {
        "run_dir": str(args.run_dir),
        "source_world_size": merged["source_world_size"],
        "world_size": None if args.merge else args.world_size,
        "merged": bool(args.merge),
        "files": [str(p) for p in paths],
        "num_classes": num_classes,
        "embedding_size": int(weight.size(1)),
        "epoch": merged["epoch"],
        "global_step": merged["global_step"],
        "optimizer_state_per_class": per_class,
        "class_split": None if args.merge else [list(class_split(num_classes, args.world_size, r))
                                                for r in range(args.world_size)],
        "from_rank_0": list(FROM_RANK_0),
    }
    if args.json:
        print_json(summary)
    else:
        target = f"one file with all {num_classes} classes" if args.merge else f"{args.world_size} ranks"
        print(f"{args.run_dir}: {summary['source_world_size']} ranks, {num_classes} classes x "
              f"{summary['embedding_size']}, epoch {summary['epoch']}, step {summary['global_step']} -> {target}",
              file=sys.stderr)
        print(f"per-class optimizer state re-split: {per_class or 'none (no optimizer step yet)'}", file=sys.stderr)
        print("from rank 0: " + "; ".join(FROM_RANK_0), file=sys.stderr)
        for path in paths:
            print(f"wrote {path}", file=sys.stderr)
        if not args.merge:
            print(f"resume: config.output = {str(args.out)!r}, config.resume = True, {args.world_size} ranks; keep "
                  f"batch_size x world_size as before (the lr schedule counts steps)", file=sys.stderr)
    return 0
