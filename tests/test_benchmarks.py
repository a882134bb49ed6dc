"""Every benchmark runs (in its small mode), prints a readable table and ends with one JSON line
of its figures. Only that is asserted: speed targets are read off the full runs, not tested.
Marked ``bench``: ``-m "not bench"`` leaves them out of a quick local run; CI runs them."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from conftest import LEGACY_PYTHON, ROOT

RUNS = {
    "cli": ["bench/bench_cli.py", "--quick"],
    "losses": ["bench/bench_losses.py", "--quick"],
    "craft": ["bench/bench_craft.py", "--quick"],
    "reader": ["bench/bench_reader.py", "--records", "300", "--legacy-python", str(LEGACY_PYTHON)],
    "reshard": ["bench/bench_reshard.py", "--quick"],
    "rec_pack": ["bench/bench_rec_pack.py", "--quick"],
    "lean_pfc": ["bench/bench_lean_pfc.py", "--quick"],
    "study_craft": ["bench/study_craft.py", "--quick"],
    "eval": ["bench/bench_eval.py", "--quick"],
}


def numbers(value):
    """Every number inside a JSON value."""
    if isinstance(value, dict):
        for item in value.values():
            yield from numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


@pytest.mark.bench
@pytest.mark.parametrize("name", sorted(RUNS))
def test_benchmark_prints_a_table_and_one_json_line(name):
    out = subprocess.run([sys.executable, *RUNS[name]], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["bench"] == name
    assert len(lines) > 3 and not lines[-2].startswith("{")  # the table comes first
    values = list(numbers(figures))
    assert len(values) >= 5 and all(math.isfinite(v) and v >= 0 for v in values)
    if name == "reader" and LEGACY_PYTHON.exists():
        assert figures["mxnet_raw_per_s"] > 0 and figures["raw_vs_mxnet"] > 0


@pytest.mark.bench
def test_device_check_runs_on_the_cpu(tmp_path):
    """bench/device_check.py --quick: every section ran or says why not (no CUDA), none failed,
    and the JSON and the markdown table it writes agree with its last line."""
    out = subprocess.run([sys.executable, "bench/device_check.py", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["bench"] == "device_check"
    report = figures["figures"]
    assert json.loads((tmp_path / "device_check.json").read_text()) == report
    table = (tmp_path / "device_check.md").read_text()
    assert f"torch {report['environment']['torch']}" in table
    sections = [name for name in report if isinstance(report[name], dict) and "status" in report[name]]
    assert len(sections) == 8
    for name in sections:
        assert "failed" not in report[name]["status"], (name, report[name]["status"])
        assert report[name]["status"] in table
    assert all(row["status"] == "ok" for row in report["sync_audit"]["features"].values())
    assert all(value is True for key, value in report["gloo_two_processes"]["checks"].items() if key != "tensors_on")
