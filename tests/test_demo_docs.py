"""docs/demo.md holds the numbers the current code gives: the command the page cites is re-run and
every number of the page (the run's duration and machine aside) is compared, at the page's
precision, with the fresh run. Marked ``bench`` (CI runs it): the full demo takes about a minute
on 2 quiet cores, several when they are shared. If it fails after a change that moves the demo's
numbers, regenerate the page: ``craft-plugin demo --write-docs docs/demo.md``."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT

PAGE = ROOT / "docs" / "demo.md"
ROW = re.compile(r"^\| (baseline|craft) \| (\S+) \| (\S+) \+- (\S+) \| (\d+)/64 \| (\d+) \| (\d+) \| [\d.]+ s \|$", re.M)
FIELDS = ("final_loss", "accuracy", "accuracy_std", "inactive_final", "checks", "revived_total")


def find(pattern: str, page: str, what: str) -> re.Match:
    match = re.search(pattern, page, re.M | re.S)
    assert match, f"docs/demo.md: found no {what} (pattern {pattern!r}); regenerate the page"
    return match


def page_numbers(page: str) -> dict:
    """The figures docs/demo.md reports, as the strings it prints."""
    rows = {m.group(1): dict(zip(FIELDS, m.groups()[1:])) for m in ROW.finditer(page)}
    assert set(rows) == {"baseline", "craft"}, f"docs/demo.md: table rows found for {sorted(rows)}"
    setting = find(r"batch 32, (\d+) steps, seed (\d+)\)", page, "steps and seed")
    paired = find(r"differs from the baseline's by (\S+) \(95% interval over the (\d+) paired folds: (\S+) to (\S+)\)",
                  page, "paired verdict")
    return {"runs": rows, "steps": setting.group(1), "seed": setting.group(2),
            "curve": find(r"^Inactive filters over training \(step: baseline / craft\): (.*?)\.$", page, "curve").group(1),
            "checks": find(r"^CRAFT's checks \(step: inactive found / revived\): (.*?)\. Each", page,
                           "CRAFT's checks").group(1).replace("\n", " "),
            "paired": dict(zip(("mean", "folds", "low", "high"), paired.groups()))}


def run_numbers(report: dict) -> dict:
    """The same figures from a fresh run's JSON report, printed as the page prints them."""
    runs = report["runs"]
    rows = {name: {"final_loss": f"{r['final_loss']:.3f}", "accuracy": f"{r['accuracy']:.3f}",
                   "accuracy_std": f"{r['accuracy_std']:.3f}", "inactive_final": str(r["inactive_final"]),
                   "checks": str(r["checks"]), "revived_total": str(r["revived_total"])} for name, r in runs.items()}
    baseline, craft = runs["baseline"]["inactive_curve"], runs["craft"]["inactive_curve"]
    p = report["paired"]
    return {"runs": rows, "steps": str(runs["baseline"]["steps"]), "seed": str(report["settings"]["seed"]),
            "curve": ", ".join(f"{b[0]}: {b[1]}/{c[1]}" for b, c in zip(baseline, craft)),
            "checks": ", ".join(f"{step}: {found}/{revived}" for step, found, revived in runs["craft"]["check_log"]),
            "paired": {"mean": f"{p['mean']:+.3f}", "folds": str(p["folds"]), "low": f"{p['low']:+.3f}",
                       "high": f"{p['high']:+.3f}"}}


def differences(page: dict, run: dict, where: str = "") -> list:
    if isinstance(page, dict):
        return [d for key in sorted(set(page) | set(run))
                for d in differences(page.get(key), run.get(key), f"{where}.{key}" if where else key)]
    return [] if page == run else [f"{where}: docs/demo.md says {page}, the code gives {run}"]


def test_page_parser_reads_a_page_written_by_the_demo():
    documented = page_numbers(PAGE.read_text(encoding="utf-8"))
    assert documented["runs"]["baseline"]["checks"] == "0" and documented["paired"]["folds"] == "10"
    assert differences(documented, documented) == []
    changed = json.loads(json.dumps(documented))
    revived = documented["runs"]["craft"]["revived_total"]
    changed["runs"]["craft"]["revived_total"] = str(int(revived) + 1)
    assert differences(documented, changed) == [
        f"runs.craft.revived_total: docs/demo.md says {revived}, the code gives {int(revived) + 1}"]


@pytest.mark.bench
def test_docs_demo_page_has_the_numbers_the_code_gives(tmp_path):
    page = PAGE.read_text(encoding="utf-8")
    documented = page_numbers(page)
    command = shlex.split(find(r"This page is written by `(craft-plugin demo[^`]*)`", page, "command").group(1))
    options = command[2:command.index("--write-docs")] if "--write-docs" in command else command[2:]
    code = "import sys; from craft_plugin.cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run([sys.executable, "-c", code, "demo", *options, "--out", str(tmp_path / "demo"), "--json"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stderr[-3000:]
    mismatches = differences(documented, run_numbers(json.loads(out.stdout)))
    assert not mismatches, "docs/demo.md is stale (regenerate: craft-plugin demo --write-docs docs/demo.md):\n" + \
        "\n".join(mismatches)
