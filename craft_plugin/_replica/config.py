"""Configs shaped like arcface_torch's: upstream ``configs/base.py`` defaults, then job keys."""
from __future__ import annotations

from typing import Any

from easydict import EasyDict


def base_config() -> EasyDict:
    """The keys and defaults of upstream ``configs/base.py`` (wandb keys included)."""
    config = EasyDict()
    config.margin_list = (1.0, 0.5, 0.0)
    config.network = "r50"
    config.resume = False
    config.save_all_states = False
    config.output = "ms1mv3_arcface_r50"
    config.embedding_size = 512
    config.sample_rate = 1
    config.interclass_filtering_threshold = 0
    config.fp16 = False
    config.batch_size = 128
    config.optimizer = "sgd"
    config.lr = 0.1
    config.momentum = 0.9
    config.weight_decay = 5e-4
    config.verbose = 2000
    config.frequent = 10
    config.dali = False
    config.dali_aug = False
    config.gradient_acc = 1
    config.seed = 2048
    config.num_workers = 2
    config.wandb_key = "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
    config.suffix_run_name = None
    config.using_wandb = False
    config.wandb_entity = "entity"
    config.wandb_project = "project"
    config.wandb_log_all = True
    config.save_artifacts = False
    config.wandb_resume = False
    return config


def mini_job() -> EasyDict:
    """A small CPU job: the mini network on synthetic identities, a few seconds per epoch.

    ``stop_after_epoch`` is the only mini-only key: end the run after that epoch's checkpoint (an
    interruption, for resume tests); ``None`` runs all epochs as upstream does.
    """
    config = EasyDict()
    config.network = "mini"
    config.output = None
    config.embedding_size = 64
    config.batch_size = 16
    config.num_workers = 0
    config.verbose = 10 ** 9
    config.frequent = 10 ** 9
    config.rec = "synthetic:32x8"
    config.num_classes = 32
    config.num_image = 256
    config.num_epoch = 2
    config.warmup_epoch = 0
    config.val_targets = []
    config.stop_after_epoch = None
    return config


def get_config(output: str, **overrides: Any) -> EasyDict:
    """``base`` updated by the mini job, then by ``overrides`` (like upstream's job config merge)."""
    cfg = base_config()
    cfg.update(mini_job())
    cfg.update(overrides)
    cfg.output = output
    return cfg
