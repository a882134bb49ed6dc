"""``craft-plugin demo`` at a tiny size: the files it promises and a JSON comparison."""
from __future__ import annotations

import json

from craft_plugin.cli import main


def test_demo_tiny(tmp_path, capsys):
    out = tmp_path / "demo"
    # 2 epochs of 2 steps; CRAFT from step 3 every 3 steps: a step check at 3 and an epoch-end
    # check at 4 (the epoch end at step 2 is before the start)
    assert main(["demo", "--out", str(out), "--epochs", "2", "--identities", "8", "--per-identity", "8",
                 "--craft-start", "3", "--craft-every", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)   # stdout is the JSON document alone
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
    assert report["settings"]["reactivation"] == {"every": 3, "start": 3}
    assert report["paired"]["folds"] == 10 and len(report["runs"]["craft"]["fold_accuracy"]) == 10
    assert report["runs"]["baseline"]["checks"] == 0 and report["runs"]["craft"]["checks"] == 2


def test_demo_refuses_a_bad_craft_option_before_training(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--craft-every", "-1"]) == 2
    assert "config.reactivation.every = -1" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
