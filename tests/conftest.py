"""Shared test fixtures."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
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
def mxnet_fixture_dir() -> Path:
    """The tiny dataset written by the real mxnet 1.9.1 in ../shared/fixtures."""
    path = SHARED / "fixtures" / "mxnet-1.9.1-insightface-layout"
    require(path.is_dir(), f"{path} missing")
    return path
