"""Shared test fixtures."""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LEGACY_PYTHON = ROOT / ".venv-legacy" / "bin" / "python"


def require(condition: bool, why: str) -> None:
    """Skip locally when a resource is missing; fail in CI, where .ci/run provides it."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide this: {why}")
        pytest.skip(why)


@pytest.fixture(scope="session")
def legacy_python() -> Path:
    """The python of the legacy venv (mxnet 1.9.1, numpy 1.23.5), built by tools/make_legacy_venv.sh."""
    require(LEGACY_PYTHON.exists(), f"{LEGACY_PYTHON} missing: run tools/make_legacy_venv.sh")
    return LEGACY_PYTHON


@pytest.fixture(scope="session")
def mxnet_fixture_dir(legacy_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny insightface-layout dataset (train.rec/.idx, property, lfw.bin) written once per session
    by the real mxnet 1.9.1 of the legacy venv; its layout is in tools/write_mxnet_fixture.py."""
    path = tmp_path_factory.mktemp("mxnet-1.9.1-insightface-layout")
    out = subprocess.run([str(legacy_python), str(ROOT / "tools" / "write_mxnet_fixture.py"), str(path)],
                         capture_output=True, text=True, timeout=300)
    if out.returncode:
        pytest.fail(f"tools/write_mxnet_fixture.py failed:\n{out.stderr}")
    return path
