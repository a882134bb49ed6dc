"""The plugin's config keys: preset resolution, and a spelling check against silent typos.

arcface_torch merges a job config over ``configs/base.py`` and accepts any key, so a misspelled
``config.reactivaton`` would silently train without CRAFT. :func:`resolve_config` refuses keys
that are a near miss of one of the plugin's keys. It changes nothing in a config that sets none
of them.
"""
from __future__ import annotations

import difflib
from typing import Any

from craft_plugin.errors import ConfigError

PLUGIN_KEYS = ("preset", "reactivation", "margin_loss", "partial_fc", "rec_reader")

# keys of upstream's configs/base.py and of its shipped job configs
UPSTREAM_KEYS = frozenset("""
margin_list network resume save_all_states output embedding_size sample_rate
interclass_filtering_threshold fp16 batch_size optimizer lr momentum weight_decay verbose frequent
dali dali_aug gradient_acc seed num_workers wandb_key suffix_run_name using_wandb wandb_entity
wandb_project wandb_log_all save_artifacts wandb_resume notes rec num_classes num_image num_epoch
warmup_epoch val_targets total_batch_size warmup_step total_step
""".split())


def check_spelling(cfg: Any) -> None:
    """Raise ConfigError for a key that is not known but is a near miss of a plugin key."""
    for key in cfg:
        if key in PLUGIN_KEYS or key in UPSTREAM_KEYS:
            continue
        close = difflib.get_close_matches(key, PLUGIN_KEYS, n=1, cutoff=0.75)
        if close:
            raise ConfigError(key, cfg[key], f"a known key; did you mean config.{close[0]}?")


def is_set(cfg: Any, key: str) -> bool:
    return cfg.get(key) is not None


def resolve_config(cfg: Any) -> Any:
    """Check spelling and fill plugin keys from ``config.preset``; keys set explicitly win."""
    check_spelling(cfg)
    if is_set(cfg, "preset"):
        from craft_plugin.presets import preset_values

        for key, value in preset_values(cfg.preset).items():
            if not is_set(cfg, key):
                cfg[key] = value
    return cfg
