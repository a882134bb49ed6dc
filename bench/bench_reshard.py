"""What `craft-plugin reshard` costs a user: the whole command (read M checkpoints, merge, split,
write N) on a synthetic run, timed end to end with its peak memory.

The run is M ``checkpoint_gpu_{r}.pt`` files as arcface_torch writes them with SGD: a backbone of
``--backbone-params`` float32 parameters with its momentum, and the rank's Partial FC shard of a
``--classes`` x 512 classifier with its momentum. Peak memory is the command's maximum resident
set size; ``extra_rss_over_classifier`` divides what it holds above a bare interpreter with the
command's imports by the bytes of the whole classifier and its optimizer state (the merge holds
those once, the split copies them once more, rank 0's file is read whole).

    python bench/bench_reshard.py            # 200k classes, 8 -> 4 ranks
    python bench/bench_reshard.py --quick    # 20k classes (the test suite's smoke run)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EMBEDDING = 512


def write_run(run_dir: Path, classes: int, ranks: int, backbone_params: int) -> None:
    """Synthetic checkpoints of an SGD run."""
    import torch

    from craft_plugin.checkpoints import class_split

    generator = torch.Generator().manual_seed(0)
    backbone = {"body.weight": torch.randn(backbone_params, generator=generator)}
    for rank in range(ranks):
        rows = class_split(classes, ranks, rank)[1]
        weight = torch.randn(rows, EMBEDDING, generator=generator)
        checkpoint = {
            "epoch": 3, "global_step": 3000, "state_dict_backbone": backbone,
            "state_dict_softmax_fc": {"weight": weight},
            "state_optimizer": {
                "state": {0: {"momentum_buffer": torch.randn_like(backbone["body.weight"])},
                          1: {"momentum_buffer": torch.randn(rows, EMBEDDING, generator=generator)}},
                "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0]},
                                 {"lr": 0.1, "momentum": 0.9, "params": [1]}]},
            "state_lr_scheduler": {"last_epoch": 3000, "base_lrs": [0.1, 0.1]},
        }
        torch.save(checkpoint, run_dir / f"checkpoint_gpu_{rank}.pt")


# the command in a child process that reports its own peak RSS (Linux: KiB) on its last stderr line
CHILD = """import resource, sys
from craft_plugin.cli import main
import craft_plugin.commands.reshard, tqdm
code = main(sys.argv[1:]) if len(sys.argv) > 1 else 0
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def peak_rss_of(argv: list) -> tuple:
    """``(peak RSS in bytes, seconds)`` of ``craft-plugin ARGV`` (no arguments: the imports alone)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(done.stderr)
    return int(done.stderr.strip().splitlines()[-1]) * 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=200_000)
    parser.add_argument("--source-ranks", type=int, default=8)
    parser.add_argument("--target-ranks", type=int, default=4)
    parser.add_argument("--backbone-params", type=int, default=5_000_000)
    parser.add_argument("--quick", action="store_true", help="20k classes, a 1M-parameter backbone")
    parser.add_argument("--write-run", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.classes, args.backbone_params = 20_000, 1_000_000
    if args.write_run:
        write_run(Path(args.write_run), args.classes, args.source_ranks, args.backbone_params)
        return
    # this process stays small (no torch): a child's peak RSS includes the parent it was forked
    # from, so writing the run and resharding it both happen in child processes
    with tempfile.TemporaryDirectory() as tmp:
        run_dir, out_dir = Path(tmp) / "run", Path(tmp) / "out"
        run_dir.mkdir()
        subprocess.run([sys.executable, __file__, "--write-run", str(run_dir), "--classes", str(args.classes),
                        "--source-ranks", str(args.source_ranks), "--backbone-params", str(args.backbone_params)],
                       check=True)
        input_bytes = sum(p.stat().st_size for p in run_dir.glob("checkpoint_gpu_*.pt"))
        baseline_rss, _ = peak_rss_of([])
        peak_rss, seconds = peak_rss_of(["reshard", str(run_dir), str(out_dir), "--world-size", str(args.target_ranks)])
        output_bytes = sum(p.stat().st_size for p in out_dir.glob("checkpoint_gpu_*.pt"))
    classifier_bytes = 2 * args.classes * EMBEDDING * 4  # weight and momentum, float32
    mb = 1 << 20
    figures = {
        "bench": "reshard", "classes": args.classes, "source_ranks": args.source_ranks,
        "target_ranks": args.target_ranks, "input_mb": round(input_bytes / mb, 1),
        "output_mb": round(output_bytes / mb, 1), "seconds": round(seconds, 2),
        "input_mb_per_s": round(input_bytes / mb / seconds, 1), "peak_rss_mb": round(peak_rss / mb, 1),
        "baseline_rss_mb": round(baseline_rss / mb, 1),
        "extra_rss_over_classifier": round((peak_rss - baseline_rss) / classifier_bytes, 2),
    }
    print(f"reshard {args.source_ranks} -> {args.target_ranks} ranks, {args.classes} classes x {EMBEDDING} "
          f"(SGD), backbone {args.backbone_params} parameters")
    print(f"{'input':>10} {'output':>10} {'seconds':>8} {'MB/s in':>8} {'peak RSS':>9} {'(bare)':>8} {'extra RSS/classifier':>21}")
    print(f"{figures['input_mb']:>8.1f}MB {figures['output_mb']:>8.1f}MB {seconds:>8.2f} "
          f"{figures['input_mb_per_s']:>8.1f} {figures['peak_rss_mb']:>7.1f}MB {figures['baseline_rss_mb']:>6.1f}MB "
          f"{figures['extra_rss_over_classifier']:>21.2f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
