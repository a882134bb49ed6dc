"""The ``arcface_torch.plugins`` entry point: hook functions called by the patched ``train_v2.py``.

Hook API version 1 (see :mod:`craft_plugin.plugin_hooks` and the README's hook contract). The
``config`` hook resolves presets, validates the plugin's keys and builds the enabled features; all
later hooks are forwarded to those features. Plugin state is stored in the checkpoint dict under
``CHECKPOINT_KEY``.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, List

from craft_plugin.config import resolve_config
from craft_plugin.features import FEATURES, Feature

HOOK_API = 1
CHECKPOINT_KEY = "craft_plugin"

_features: List[Feature] = []


def build_features(cfg: Any) -> List[Feature]:
    """The enabled features for ``cfg`` (empty when the config enables none)."""
    import craft_plugin.feature_set  # noqa: F401  registers the features

    enabled = (FEATURES.get(name).from_config(cfg) for name in FEATURES.names())
    return [feature for feature in enabled if feature is not None]


def config(cfg: Any, api: int = HOOK_API) -> Any:
    global _features
    if api != HOOK_API:
        raise RuntimeError(
            f"craft-plugin speaks arcface_torch hook API {HOOK_API}, the patched train_v2.py "
            f"speaks {api}: re-apply the patch with `craft-plugin patch` from this craft-plugin")
    cfg = resolve_config(cfg)
    _features = build_features(cfg)
    if _features:
        logging.info("craft-plugin enabled: %s", ", ".join(f.name for f in _features))
    return cfg


def margin_loss(loss: Callable, cfg: Any) -> Callable:
    for feature in _features:
        loss = feature.margin_loss(loss, cfg)
    return loss


def partial_fc_class(pfc_class: type, cfg: Any) -> type:
    for feature in _features:
        pfc_class = feature.partial_fc_class(pfc_class, cfg)
    return pfc_class


def dataloader_factory(factory: Callable, cfg: Any) -> Callable:
    for feature in _features:
        factory = feature.dataloader_factory(factory, cfg)
    return factory


def verification_class(callback_class: type, cfg: Any) -> type:
    for feature in _features:
        callback_class = feature.verification_class(callback_class, cfg)
    return callback_class


def on_train_start(**kwargs: Any) -> None:
    for feature in _features:
        feature.on_train_start(**kwargs)


def on_optimizer_step(**kwargs: Any) -> None:
    for feature in _features:
        feature.on_optimizer_step(**kwargs)


def on_epoch_end(**kwargs: Any) -> None:
    for feature in _features:
        feature.on_epoch_end(**kwargs)


def on_save_checkpoint(checkpoint: dict) -> None:
    if _features:
        checkpoint[CHECKPOINT_KEY] = {f.name: f.state_dict() for f in _features}


def on_resume(checkpoint: dict) -> None:
    states = checkpoint.get(CHECKPOINT_KEY, {})
    for feature in _features:
        if feature.name in states:
            feature.load_state_dict(states[feature.name])
        else:
            logging.warning("craft-plugin: the checkpoint holds no state for %r; it starts fresh",
                            feature.name)


def on_train_end() -> None:
    for feature in _features:
        feature.on_train_end()
