"""Every upstream config key read by a part the plugin replaces is honoured or refused, never dropped.

The list of keys is written here from upstream's train_v2.py (what it passes to
CombinedMarginLoss, PartialFC_V2, get_dataloader and CallBackVerification), independently of
craft_plugin.upstream_keys.REPLACED_KEYS; each key has a behavioural check run through the
plugin's hooks as the patched train_v2.py calls them.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from easydict import EasyDict

import craft_plugin.plugin as plugin
from craft_plugin.data import rec_reader_feature
from craft_plugin.data.writer import write_bin, write_rec
from craft_plugin.errors import ConfigError
from craft_plugin.upstream_keys import REPLACED_KEYS
from craft_plugin._replica.partial_fc import PartialFC_V2
from craft_plugin._replica.synthetic import synthetic_image

ROOT = Path(__file__).resolve().parents[1]
# train_v2.py: CombinedMarginLoss(64, *margin_list, interclass_filtering_threshold);
# PartialFC_V2(loss, embedding_size, num_classes, sample_rate, False); get_dataloader(rec, local_rank,
# batch_size, dali, dali_aug, seed, num_workers); CallBackVerification(val_targets, rec, ...)
UPSTREAM_READS = {"margin_list", "interclass_filtering_threshold", "embedding_size", "num_classes", "sample_rate",
                  "fp16", "rec", "batch_size", "dali", "dali_aug", "seed", "num_workers", "val_targets"}
DIM, CLASSES, BATCH = 8, 20, 6


def margin_cfg(**keys):
    base = dict(margin_list=(1.0, 0.5, 0.0), interclass_filtering_threshold=0, embedding_size=DIM,
                num_classes=CLASSES, sample_rate=1.0, fp16=False, margin_loss="arcface")
    base.update(keys)
    return plugin.config(EasyDict(base))


def partial_fc(cfg):
    """The Partial FC module as the patched train_v2.py builds it."""
    loss = plugin.margin_loss(None, cfg)
    cls = plugin.partial_fc_class(PartialFC_V2, cfg)
    torch.manual_seed(0)
    return cls(loss, cfg.embedding_size, cfg.num_classes, cfg.sample_rate, False)


def one_step(pfc):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, pfc.embedding_size, generator=gen, requires_grad=True)
    y = torch.randint(0, pfc.num_local, (BATCH,), generator=gen)
    torch.manual_seed(2)
    loss = pfc(x, y)
    loss.backward()
    return loss.detach()


def check_margin_list(tmp_path, monkeypatch):
    margin_cfg()  # the base config's value
    margin_cfg(margin_list=[1.0, 0.3, 0.0], margin_loss={"name": "arcface", "m": 0.3})  # the same loss
    margin_cfg(margin_list=(1.0, 0.0, 0.4), margin_loss="cosface")
    for margins, loss in (((1.0, 0.0, 0.4), "arcface"), ((1.0, 0.0, 0.35), "cosface"),
                          ((1.0, 0.0, 0.4), "elasticface-cos"), ((1.0, 0.4, 0.0), "cosface+craft")):
        key = "preset" if loss.endswith("+craft") else "margin_loss"
        with pytest.raises(ConfigError) as error:
            margin_cfg(**{"margin_list": margins, "margin_loss": None, key: loss})
        assert error.value.key == "margin_list" and "would be ignored" in str(error.value)
    plugin.config(EasyDict(margin_list=(1.0, 0.0, 0.4)))  # no margin_loss: upstream's own, untouched


def check_interclass_filtering_threshold(tmp_path, monkeypatch):
    for extra in ({}, {"partial_fc": {"chunk": 7}}):
        on = one_step(partial_fc(margin_cfg(interclass_filtering_threshold=0.05, **extra)))
        off = one_step(partial_fc(margin_cfg(**extra)))
        assert not torch.allclose(on, off)
    cos = torch.tensor([[0.9, 0.3, 0.1]])
    out = plugin.margin_loss(None, margin_cfg(interclass_filtering_threshold=0.2))(cos.clone(), torch.tensor([[0]]))
    assert out[0, 1] == 0 and out[0, 2] == pytest.approx(6.4) and out[0, 0] != 0


def check_embedding_size(tmp_path, monkeypatch):
    for extra in ({}, {"partial_fc": {}}, {"margin_loss": {"name": "sphereface-r", "norm": "soft"}}):
        pfc = partial_fc(margin_cfg(embedding_size=12, **extra))
        assert pfc.weight.shape == (CLASSES, 12) and torch.isfinite(one_step(pfc))


def check_num_classes(tmp_path, monkeypatch):
    for extra in ({}, {"partial_fc": {}}, {"margin_loss": "adaface"}):
        assert partial_fc(margin_cfg(num_classes=33, **extra)).weight.shape == (33, DIM)


def check_sample_rate(tmp_path, monkeypatch):
    for extra in ({}, {"partial_fc": {"chunk": 3}}, {"margin_loss": "magface"}):
        pfc = partial_fc(margin_cfg(sample_rate=0.5, **extra))
        one_step(pfc)
        touched = int((pfc.weight.grad.abs().sum(1) > 0).sum())
        assert pfc.num_sample == 10 and touched == 10


def check_fp16(tmp_path, monkeypatch):
    # upstream gives Partial FC fp16=False whatever config.fp16 says; so does the plugin's class
    for extra in ({}, {"partial_fc": {}}):
        pfc = partial_fc(margin_cfg(fp16=True, **extra))
        assert pfc.fp16 is False
        assert torch.equal(one_step(pfc), one_step(partial_fc(margin_cfg(fp16=False, **extra))))


def rec_cfg(tmp_path, **keys):
    root = tmp_path / "data"
    if not (root / "train.rec").exists():
        write_rec(root, [(synthetic_image(0, k // 2, k % 2, 16), k // 2) for k in range(8)])
        write_bin(root / "tiny.bin", [(synthetic_image(4, k, 0, 16), synthetic_image(4, k, 1, 16), k % 2 == 0)
                                      for k in range(4)])
    base = dict(rec=str(root), rec_reader="craft", batch_size=2, dali=False, dali_aug=False, seed=7, num_workers=0,
                num_classes=4, num_image=8, val_targets=[])
    base.update(keys)
    return plugin.config(EasyDict(base))


def loader(cfg, upstream=None):
    factory = plugin.dataloader_factory(upstream or (lambda *a: pytest.fail(f"upstream loader called: {a}")), cfg=cfg)
    return factory(cfg.rec, 0, cfg.batch_size, cfg.dali, cfg.dali_aug, cfg.seed, cfg.num_workers)


def check_rec(tmp_path, monkeypatch):
    images, labels = next(iter(loader(rec_cfg(tmp_path))))
    assert images.shape == (2, 3, 16, 16) and set(labels.tolist()) <= {0, 1, 2, 3}
    calls = []  # a folder without train.rec/.idx is an image folder for upstream's loader, as without the plugin
    loader(rec_cfg(tmp_path, rec=str(tmp_path)), lambda *a: calls.append(a))
    assert calls and calls[0][0] == str(tmp_path)


def check_batch_size(tmp_path, monkeypatch):
    assert next(iter(loader(rec_cfg(tmp_path, batch_size=4))))[0].shape[0] == 4


def check_seed(tmp_path, monkeypatch):
    def order(seed):
        return torch.cat([labels for _, labels in loader(rec_cfg(tmp_path, seed=seed))]).tolist()

    assert loader(rec_cfg(tmp_path, seed=11)).sampler.seed == 11
    assert order(11) == order(11) and any(order(11) != order(s) for s in (12, 13, 14))


def check_num_workers(tmp_path, monkeypatch):
    assert loader(rec_cfg(tmp_path, num_workers=1)).num_workers == 1


def check_dali(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as error:
        rec_cfg(tmp_path, dali=True)
    assert error.value.key == "dali"
    monkeypatch.setattr(rec_reader_feature, "mxnet_problem", lambda: "ModuleNotFoundError: mxnet")
    calls = []
    cfg = rec_cfg(tmp_path, dali=True, dali_aug=True, rec_reader="auto")
    assert loader(cfg, lambda *a: calls.append(a) or "dali loader") == "dali loader"
    assert calls == [(cfg.rec, 0, 2, True, True, 7, 0)]  # upstream's DALI loader, with every key


def check_dali_aug(tmp_path, monkeypatch):
    monkeypatch.setattr(rec_reader_feature, "mxnet_problem", lambda: "ModuleNotFoundError: mxnet")
    for aug in (True, False):
        calls = []
        loader(rec_cfg(tmp_path, dali=True, dali_aug=aug, rec_reader="auto"), lambda *a: calls.append(a))
        assert calls[0][4] is aug


def check_val_targets(tmp_path, monkeypatch):
    cfg = rec_cfg(tmp_path, val_targets=["tiny"])
    cls = plugin.verification_class(object, cfg=cfg)
    callback = cls(val_targets=cfg.val_targets, rec_prefix=cfg.rec, summary_writer=None, wandb_logger=None)
    assert callback.names == ["tiny"] and len(callback.sets[0][1]) == 4
    with pytest.raises(FileNotFoundError, match="config.val_targets names 'lfw'"):
        cls(val_targets=["lfw"], rec_prefix=cfg.rec, summary_writer=None, wandb_logger=None)


CHECKS = {name[len("check_"):]: fn for name, fn in globals().items() if name.startswith("check_")}


def test_the_table_lists_exactly_what_upstream_s_replaced_parts_read():
    keys = [row.key for row in REPLACED_KEYS]
    assert len(keys) == len(set(keys)) and set(keys) == UPSTREAM_READS == set(CHECKS)
    for row in REPLACED_KEYS:
        assert row.decision.startswith(("honoured", "refused")) and row.feature in ("margin_loss", "rec_reader")
        assert (row.check is not None) == row.decision.startswith("refused"), row.key


@pytest.mark.parametrize("row", REPLACED_KEYS, ids=lambda row: row.key)
def test_every_replaced_key_is_honoured_or_refused(row, tmp_path, monkeypatch):
    CHECKS[row.key](tmp_path, monkeypatch)


def test_the_docs_table_names_every_key_with_its_decision():
    text = (ROOT / "docs" / "losses.md").read_text()
    section = text[text.index("## Upstream keys the plugin takes over"):]
    for row in REPLACED_KEYS:
        line = next((ln for ln in section.splitlines() if ln.startswith(f"| `{row.key}` |")), None)
        assert line is not None, row.key
        assert row.decision.split()[0] in line, row.key
