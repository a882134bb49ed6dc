"""Issue 11: a registered plugin that cannot be imported stops training (unless opted out), and
SphereFace-R's loss weight follows OpenSphere per feature normalisation."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from craft_plugin import plugin_hooks
from craft_plugin.losses import build_margin_loss


def broken_distribution(root):
    """A distribution on ``root`` registering ``broken_craft`` in ``arcface_torch.plugins``, whose
    module raises on import as a plugin built against another numpy would."""
    info = root / "broken_craft-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-craft\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[arcface_torch.plugins]\nbroken_craft = broken_craft_plugin\n")
    (root / "broken_craft_plugin.py").write_text("raise AttributeError(\"module 'numpy' has no attribute 'bool'\")\n")


def import_hooks(root, **env):
    """Import plugin_hooks as the patched train_v2.py does, in a fresh interpreter."""
    environ = {k: v for k, v in os.environ.items() if k != plugin_hooks.OPTIONAL_ENV}
    environ.update(PYTHONPATH=os.pathsep.join([str(root)] + sys.path), **env)
    code = "import craft_plugin.plugin_hooks as h; print('loaded', len(h.PLUGINS))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=120)


def test_an_unimportable_plugin_stops_training_with_its_name_and_exception(tmp_path):
    broken_distribution(tmp_path)
    run = import_hooks(tmp_path)
    assert run.returncode != 0 and "loaded" not in run.stdout
    assert "ImportError: arcface_torch plugin 'broken_craft' (broken_craft_plugin) cannot be imported" in run.stderr
    assert "AttributeError: module 'numpy' has no attribute 'bool'" in run.stderr
    assert plugin_hooks.OPTIONAL_ENV in run.stderr


def test_the_documented_opt_out_skips_it_with_a_warning(tmp_path):
    broken_distribution(tmp_path)
    run = import_hooks(tmp_path, **{plugin_hooks.OPTIONAL_ENV: "1"})
    assert run.returncode == 0, run.stderr
    assert "loaded" in run.stdout
    assert "'broken_craft' (broken_craft_plugin) cannot be imported" in run.stderr and "training without it" in run.stderr


@pytest.mark.parametrize("norm, lw", [("hard", 50.0), ("none", 1.0), ("soft", 50.0)])
def test_sphereface_r_loss_weight_default_per_norm(norm, lw):
    loss = build_margin_loss({"name": "sphereface-r", "norm": norm})
    assert loss.lw == lw
    ce = torch.tensor(2.0)
    norms = torch.full((4,), 30.0)
    expected = lw * ce if norm == "none" else lw * ce / 30.0
    assert torch.allclose(loss.total_loss(ce, norms, 1), expected)
    assert build_margin_loss({"name": "sphereface-r", "norm": norm, "lw": 7.0}).lw == 7.0


@pytest.mark.parametrize("norm", ["hard", "none", "soft"])
def test_a_loss_weight_never_goes_to_the_stock_partial_fc(norm):
    """Upstream's PartialFC_V2 returns the plain cross-entropy and would drop lw: the feature swaps in
    the norm-aware Partial FC, which applies total_loss (lw) for every norm."""
    from craft_plugin._replica.partial_fc import PartialFC_V2
    from craft_plugin.losses.margin_loss_feature import MarginLossFeature

    feature = MarginLossFeature(build_margin_loss({"name": "sphereface-r", "norm": norm}))
    chosen = feature.partial_fc_class(PartialFC_V2, cfg={})
    assert chosen is not PartialFC_V2 and issubclass(chosen, PartialFC_V2)
