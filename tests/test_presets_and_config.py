"""Presets, the plugin's config keys, the margin-loss feature in training, and the CLI surface."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from easydict import EasyDict

import craft_plugin.plugin
from craft_plugin.cli import main
from craft_plugin.config import resolve_config
from craft_plugin.errors import ConfigError
from craft_plugin.losses import MARGIN_LOSSES, build_margin_loss, default_parameters
from craft_plugin.losses.norm_aware_pfc import norm_aware_partial_fc
from craft_plugin._replica.backbone import MiniIResNet
from craft_plugin._replica.config import get_config
from craft_plugin._replica.partial_fc import PartialFC_V2
from craft_plugin._replica.train import train
from craft_plugin.plugin import build_features
from craft_plugin.presets import PRESETS, preset_values


@pytest.mark.parametrize("name", PRESETS.names())
def test_every_preset_resolves_and_builds(name):
    cfg = resolve_config(EasyDict(preset=name, margin_list=(1.0, 0.5, 0.0)))
    for key, value in PRESETS.get(name).values.items():
        assert cfg[key] == value
    features = {f.name for f in build_features(cfg)}
    assert ("margin_loss" in features) == ("margin_loss" in PRESETS.get(name).values)
    assert ("reactivation" in features) == name.endswith("craft")
    assert PRESETS.get(name).source


@pytest.mark.parametrize("name", MARGIN_LOSSES.names())
def test_loss_presets_are_the_losses_registered_defaults_and_citation(name):
    """Every margin loss has a preset (and a +craft twin) holding its constructor's defaults."""
    cls = MARGIN_LOSSES.get(name)
    assert cls.source
    for preset in (name, f"{name}+craft"):
        assert preset_values(preset)["margin_loss"] == {"name": name, **default_parameters(name)}
        assert PRESETS.get(preset).source.startswith(cls.source)
    assert isinstance(build_margin_loss(preset_values(name)["margin_loss"]), cls)


def test_explicit_keys_win_over_the_preset():
    cfg = resolve_config(EasyDict(preset="elasticface-arc+craft", reactivation={"every": 10}))
    assert cfg.reactivation == {"every": 10}
    assert cfg.margin_loss == preset_values("elasticface-arc")["margin_loss"]


def test_unknown_preset_and_misspelled_keys_are_errors():
    with pytest.raises(ConfigError, match="config.preset = 'arcfase'"):
        resolve_config(EasyDict(preset="arcfase"))
    with pytest.raises(ConfigError, match="did you mean config.reactivation"):
        resolve_config(EasyDict(reactivaton="craft"))
    with pytest.raises(ConfigError, match="did you mean config.margin_loss"):
        resolve_config(EasyDict(margin_los="arcface"))
    assert resolve_config(EasyDict(my_own_key=1, network="r50")).my_own_key == 1


def test_hook_api_version_is_checked():
    with pytest.raises(RuntimeError, match="hook API"):
        craft_plugin.plugin.config(EasyDict(), api=2)


def test_hooks_reach_the_features_by_name_and_skipped_steps_are_read_once(monkeypatch):
    """One read of "did GradScaler skip?" per step, only when a feature counts steps, and a
    skipped step reaches none of them."""
    reads = []
    skipped = iter([True, False])
    monkeypatch.setattr(craft_plugin.plugin, "step_was_skipped", lambda scaler, opt: reads.append(opt) or next(skipped))
    craft_plugin.plugin.config(EasyDict(rec_reader="craft", reactivation="craft",
                                        margin_loss={"name": "sphereface-r", "dm": 0.5, "steps": [0]}))
    backbone = MiniIResNet(16)
    optimizer = torch.optim.SGD(backbone.parameters(), lr=0.1)
    craft_plugin.plugin.on_train_start(cfg=None, backbone=backbone, partial_fc=None, optimizer=optimizer,
                                       lr_scheduler=None, summary_writer=None, rank=0, world_size=1)
    loss = craft_plugin.plugin.feature("margin_loss").loss
    reactivator = craft_plugin.plugin.feature("reactivation").reactivator
    assert craft_plugin.plugin.margin_loss(None, EasyDict()) is loss
    for step in (1, 2):
        craft_plugin.plugin.on_optimizer_step(global_step=step, optimizer=optimizer, scaler="fp16")
    assert reads == [optimizer, optimizer]
    assert loss.step == 1 and reactivator.steps == 1 and loss.current_m() == 2.0

    craft_plugin.plugin.config(EasyDict(rec_reader="craft"))
    craft_plugin.plugin.on_optimizer_step(global_step=3, optimizer=optimizer, scaler="fp16")
    assert len(reads) == 2  # no feature counts steps: nothing read
    assert craft_plugin.plugin.partial_fc_class(PartialFC_V2, EasyDict()) is PartialFC_V2
    with pytest.raises(LookupError, match="'reactivation' is not enabled"):
        craft_plugin.plugin.feature("reactivation")


def test_norm_aware_partial_fc_is_a_drop_in(tmp_path):
    cfg = get_config(str(tmp_path), num_epoch=2, rec="synthetic:16x4", num_classes=16, num_image=64,
                     batch_size=8, save_all_states=True, num_workers=1,
                     margin_loss={"name": "sphereface-r", "norm": "soft", "dm": 0.5, "steps": [3]})
    result = train(cfg, plugins=[craft_plugin.plugin])
    assert type(result.partial_fc).__name__ == "NormAwarePartialFC_V2"
    assert isinstance(result.partial_fc, PartialFC_V2)
    assert all(torch.isfinite(torch.tensor(result.losses)))
    saved = torch.load(tmp_path / "checkpoint_gpu_0.pt", weights_only=False)
    assert saved["craft_plugin"]["margin_loss"] == {"step": 16}
    plain = PartialFC_V2(lambda x, y: x, 64, 16)
    plain.load_state_dict(saved["state_dict_softmax_fc"])  # checkpoints interchange
    assert norm_aware_partial_fc(PartialFC_V2)(lambda x, y: x, 64, 16).state_dict().keys() == plain.state_dict().keys()


def test_elasticface_training_resume_is_exact(tmp_path):
    def cfg(path, **kw):
        return get_config(str(path), num_epoch=2, rec="synthetic:16x4", num_classes=16, num_image=64,
                          batch_size=8, save_all_states=True, num_workers=1, preset="elasticface-cos-plus", **kw)
    whole = train(cfg(tmp_path / "a"), plugins=[craft_plugin.plugin])
    train(cfg(tmp_path / "b", stop_after_epoch=1), plugins=[craft_plugin.plugin])
    resumed = train(cfg(tmp_path / "b", resume=True), plugins=[craft_plugin.plugin])
    assert resumed.losses == whole.losses[-len(resumed.losses):]


def test_cli_help_and_presets_json(capsys):
    out = subprocess.run([sys.executable, "-m", "craft_plugin.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for verb in ("demo", "patch", "inspect", "presets", "rec"):
        assert verb in out.stdout
    assert main(["presets", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["presets"]) == set(PRESETS.names())
    assert report["margin_losses"]["elasticface-cos-plus"]["sigma"] == 0.02


def test_shipped_configs_resolve():
    import importlib.util
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.py"))
    assert configs
    for path in configs:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cfg = resolve_config(module.config)
        assert {f.name for f in build_features(cfg)} >= {"margin_loss", "reactivation"}, path.name
