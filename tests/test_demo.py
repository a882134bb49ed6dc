"""``craft-plugin demo`` at a tiny size: the files it promises and a JSON comparison."""
from __future__ import annotations

import json

from craft_plugin.cli import main


def test_demo_tiny(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "2", "--identities", "8", "--per-identity", "8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["runs"]) == {"baseline", "craft"}
    for name, run in report["runs"].items():
        assert run["steps"] == 4
        assert 0.0 <= run["accuracy"] <= 1.0 and run["final_loss"] > 0
        assert run["inactive_curve"][0][0] == 0 and run["inactive_curve"][-1][0] == 4
        assert (out / f"{name}_conv1_filters.png").stat().st_size > 0
        assert list((out / name / "tensorboard").iterdir())
    for name in ("train.rec", "train.idx", "property", "val.bin"):
        assert (out / "data" / name).exists()
    assert (out / "inactive_filters.png").exists()
    assert report["settings"]["reactivation"] == {"every": 50, "start": 50}
