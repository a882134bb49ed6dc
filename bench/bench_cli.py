"""``craft-plugin --help`` and ``craft-plugin VERB --help`` wall time, each a fresh process (what
a user waits for), best and median of ``--repeats``, with the process's CPU time (user + system,
which load from other processes does not inflate) and bare ``python -c pass`` for scale; target:
under 0.5 s. Prints a table, then one JSON line of the figures."""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from craft_plugin.cli import COMMANDS

TARGET_S = 0.5


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list) -> tuple:
    """``(wall s, cpu s)`` of one run of ``argv``."""
    cpu, started = children_cpu(), time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started, children_cpu() - cpu


def summary(runs: list) -> dict:
    walls = [wall for wall, _ in runs]
    return {"best_s": min(walls), "median_s": statistics.median(walls),
            "cpu_s": statistics.median(cpu for _, cpu in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 repeats, top-level --help and one verb")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    cases = [[]] + [[verb] for verb in (["presets"] if args.quick else sorted(COMMANDS))]
    entry = [sys.executable, "-m", "craft_plugin.cli"]
    rows = {}
    for case in cases:
        rows[" ".join(["craft-plugin"] + case + ["--help"])] = summary([timed(entry + case + ["--help"])
                                                                        for _ in range(repeats)])
    rows["(python -c pass)"] = summary([timed([sys.executable, "-c", "pass"]) for _ in range(repeats)])
    print(f"{'command':<34}{'best s':>9}{'median s':>10}{'cpu s':>8}")
    for name, row in rows.items():
        print(f"{name:<34}{row['best_s']:>9.3f}{row['median_s']:>10.3f}{row['cpu_s']:>8.3f}")
    baseline = rows.pop("(python -c pass)")
    worst = max(row["median_s"] for row in rows.values())
    print(f"slowest median {worst:.3f} s; target < {TARGET_S} s: {'met' if worst < TARGET_S else 'NOT met'}")
    print(json.dumps({"bench": "cli", "help_s": rows, "python_startup_s": baseline, "slowest_median_s": worst,
                      "target_s": TARGET_S, "repeats": repeats}))


if __name__ == "__main__":
    main()
