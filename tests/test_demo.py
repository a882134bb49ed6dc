"""``craft-plugin demo`` at a tiny size: the files it promises and a JSON comparison."""
from __future__ import annotations

import json
from pathlib import Path

from craft_plugin.cli import main


def test_demo_tiny(tmp_path, capsys):
    out, docs = tmp_path / "demo", tmp_path / "docs"
    docs.mkdir()
    # 2 epochs of 2 steps; CRAFT from step 3 every 3 steps: a step check at 3 and an epoch-end
    # check at 4 (the epoch end at step 2 is before the start)
    assert main(["demo", "--out", str(out), "--epochs", "2", "--identities", "8", "--per-identity", "8",
                 "--craft-start", "3", "--craft-every", "3", "--write-docs", str(docs / "demo.md"), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)   # stdout is the JSON document alone
    assert set(report["runs"]) == {"baseline", "craft"}
    for name, run in report["runs"].items():
        assert run["steps"] == 4
        assert 0.0 <= run["accuracy"] <= 1.0 and run["final_loss"] > 0
        assert run["inactive_curve"][0][0] == 0 and run["inactive_curve"][-1][0] == 4
        assert list((out / name / "tensorboard").iterdir())
    for name in ("train.rec", "train.idx", "property", "val.bin"):
        assert (out / "data" / name).exists()
    assert report["settings"]["reactivation"] == {"every": 3, "start": 3}
    assert report["paired"]["folds"] == 10 and len(report["runs"]["craft"]["fold_accuracy"]) == 10
    assert report["runs"]["baseline"]["checks"] == 0 and report["runs"]["craft"]["checks"] == 2
    assert [entry[0] for entry in report["runs"]["craft"]["check_log"]] == [3, 4]

    # every file written is named, with its real path, in the JSON and in the human report (stderr here)
    expected = {out / "data", out / "baseline" / "model.pt", out / "craft" / "model.pt", out / "conv1_filters.png",
                out / "inactive_filters.png", out / "baseline" / "tensorboard", out / "craft" / "tensorboard",
                docs / "demo.md", docs / "demo_conv1_filters.png", docs / "demo_inactive_filters.png"}
    assert {Path(f["path"]) for f in report["files"]} == expected
    listed = captured.err.split("files written:")[1]
    for path in expected:
        assert path.exists() and f"  {path}: " in listed
    assert "<run>" not in captured.err
    assert "baseline: val.bin" in captured.err and "craft: val.bin" in captured.err   # evaluation progress
    page = (docs / "demo.md").read_text()
    assert str(tmp_path) not in page   # the page cites no folder of this machine
    assert "craft-plugin demo --epochs 2 --identities 8 --per-identity 8 --craft-every 3 --craft-start 3" in page
    assert "](demo_conv1_filters.png)" in page and "](demo_inactive_filters.png)" in page


def test_the_plot_marks_every_check_and_the_filters_it_revived():
    from craft_plugin.commands.demo_runs import inactive_figure

    runs = {"baseline": {"inactive_curve": [[0, 0], [10, 4], [20, 6]], "inactive_final": 6, "check_log": []},
            "craft": {"inactive_curve": [[0, 0], [10, 1], [20, 0]], "inactive_final": 0,
                      "check_log": [[5, 0, 0], [15, 3, 3], [20, 2, 1]]}}
    fig = inactive_figure(runs)
    top, bottom = fig.axes
    found = top.collections[0].get_offsets()
    assert found.tolist() == [[5, 0], [15, 3], [20, 2]]          # what each check found, at its step
    bars = [(p.get_x() + p.get_width() / 2, p.get_height()) for p in bottom.patches]
    assert bars == [(5, 0), (15, 3), (20, 1)]                    # what each check revived
    assert "4 in total" in bottom.get_title() and "3 checks" in bottom.get_title()
    assert "inactive = a filter whose weights' L2 norm is below 0.1 x" in top.get_title().replace("\n", " ")


def test_demo_refuses_a_bad_craft_option_before_training(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--craft-every", "-1"]) == 2
    assert "config.reactivation.every = -1" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
