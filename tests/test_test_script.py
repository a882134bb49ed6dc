"""``tools/test.sh`` (the README's and CI's test command) says what it does before each step of
building the three venvs, then runs pytest with the arguments it was given. Run here on a copy of
``tools/`` with stand-in interpreters that only log their arguments, so nothing is installed."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

# a python / python3 that logs "<its path relative to the copy> <args>" and, for `-m venv DIR`,
# creates DIR/bin/python as another stand-in
STAND_IN = """#!/usr/bin/env bash
name="${0#$COPY/}"; case "$name" in /*) name="$(basename "$name")";; esac
echo "RUN $name $*" >&2
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin" && cp "$STAND_IN" "$3/bin/python" && ln -s python "$3/bin/pip"
fi
"""


def stand_in(path: Path, source: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, path)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def copy(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "tools", root / "tools")
    source = tmp_path / "stand_in"
    source.write_text(STAND_IN)
    source.chmod(0o755)
    stand_in(tmp_path / "bin" / "python3", source)
    return root, source, tmp_path / "bin"


def run_test_sh(root: Path, source: Path, bindir: Path) -> list:
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", COPY=str(root), STAND_IN=str(source))
    out = subprocess.run(["bash", "tools/test.sh", "-m", "not bench"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stderr.splitlines()


def said_before_each_step(lines: list) -> None:
    """Every logged command is preceded by a line of the scripts saying what comes (except the
    `python -c` checks, which print what they found themselves)."""
    for i, line in enumerate(lines):
        if line.startswith("RUN ") and " -c " not in line:
            assert i > 0 and lines[i - 1].startswith("tools/"), (line, lines[:i])


def test_a_fresh_build_says_each_step(copy):
    lines = run_test_sh(*copy)
    said_before_each_step(lines)
    text = "\n".join(lines)
    for venv in (".venv", ".venv-legacy", ".venv-insightface"):
        assert f"creating {venv}\nRUN python3 -m venv {venv}" in text
    assert "installing torch 2.13.0" in text and "mxnet 1.9.1" in text and "insightface 2.1" in text
    assert lines[-2:] == ["tools/test.sh: running the test suite: python -m pytest -q -m not bench",
                          "RUN .venv/bin/python -m pytest -q -m not bench"]


def test_existing_venvs_are_reused_and_said_so(copy):
    root, source, bindir = copy
    for venv in (".venv", ".venv-legacy", ".venv-insightface"):
        stand_in(root / venv / "bin" / "python", source)
    lines = run_test_sh(root, source, bindir)
    said_before_each_step(lines)
    text = "\n".join(lines)
    assert "creating" not in text and "reusing .venv-legacy" in text and "reusing .venv-insightface" in text
    assert lines[-1] == "RUN .venv/bin/python -m pytest -q -m not bench"


def test_it_is_the_readmes_and_cis_command():
    assert "    bash tools/test.sh\n" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert (ROOT / ".ci" / "run").read_text(encoding="utf-8").rstrip().endswith("exec bash tools/test.sh")
