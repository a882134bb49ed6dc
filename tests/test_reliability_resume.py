"""Issue 11: resuming with a changed plugin config says which state was dropped and why, and
training continues with fresh state for the changed feature (no KeyError)."""
from __future__ import annotations

import logging
import shutil

import pytest
import torch

import craft_plugin.plugin
from craft_plugin._replica.config import get_config
from craft_plugin._replica.train import train
from craft_plugin.plugin import CHECKPOINT_KEY, CONFIG_RECORD

COMMON = dict(num_epoch=2, num_workers=1, save_all_states=True, rec="synthetic:16x4", num_classes=16,
              num_image=64, batch_size=8)
SAVED_WITH = {"name": "sphereface-r", "norm": "hard"}          # state {"step": ...}
RESUMED_WITH = {"name": "elasticface-arc", "seed": 3}           # state {"generator": ...}


@pytest.fixture(scope="module")
def cut_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("cut")
    train(get_config(str(output), stop_after_epoch=1, margin_loss=SAVED_WITH, **COMMON), plugins=[craft_plugin.plugin])
    return output


def resume(output, caplog, margin_loss):
    with caplog.at_level(logging.WARNING):
        return train(get_config(str(output), resume=True, margin_loss=margin_loss, **COMMON),
                     plugins=[craft_plugin.plugin])


def test_the_checkpoint_records_each_features_config(cut_run):
    saved = torch.load(cut_run / "checkpoint_gpu_0.pt", weights_only=True)[CHECKPOINT_KEY]
    assert saved["margin_loss"] == {"step": 8}
    assert saved[CONFIG_RECORD] == {"margin_loss": '{"name": "sphereface-r", "norm": "hard"}'}


def test_a_changed_margin_loss_starts_fresh_with_a_message(cut_run, tmp_path, caplog):
    output = tmp_path / "run"
    shutil.copytree(cut_run, output)
    result = resume(output, caplog, RESUMED_WITH)
    assert result.global_step == 16
    assert ("config.margin_loss changed since the checkpoint was saved (then "
            '{"name": "sphereface-r", "norm": "hard"}, now {"name": "elasticface-arc", "seed": 3}): '
            "its saved state (step) is dropped and margin_loss starts fresh") in caplog.text
    saved = torch.load(output / "checkpoint_gpu_0.pt", weights_only=True)[CHECKPOINT_KEY]
    assert set(saved["margin_loss"]) == {"generator"}


def test_a_checkpoint_without_the_record_whose_state_does_not_fit_starts_fresh(cut_run, tmp_path, caplog):
    output = tmp_path / "run"
    shutil.copytree(cut_run, output)
    path = output / "checkpoint_gpu_0.pt"
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint[CHECKPOINT_KEY][CONFIG_RECORD]            # as written before the record existed
    checkpoint[CHECKPOINT_KEY]["margin_loss"] = {"generator": torch.zeros(3, dtype=torch.uint8)}
    torch.save(checkpoint, path)
    result = resume(output, caplog, {"name": "sphereface-r", "norm": "hard"})
    assert result.global_step == 16
    assert "the checkpoint's margin_loss state (generator) does not fit config.margin_loss" in caplog.text
    assert "KeyError: 'step'" in caplog.text and "margin_loss starts fresh" in caplog.text


def test_an_unchanged_config_restores_the_state_silently(cut_run, tmp_path, caplog):
    output = tmp_path / "run"
    shutil.copytree(cut_run, output)
    resume(output, caplog, SAVED_WITH)
    assert "starts fresh" not in caplog.text
    assert torch.load(output / "checkpoint_gpu_0.pt", weights_only=True)[CHECKPOINT_KEY]["margin_loss"] == {"step": 16}
