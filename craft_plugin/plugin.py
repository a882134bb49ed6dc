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


def _filtered(hook: str, value: Any, cfg: Any) -> Any:
    """``value`` passed through each enabled feature's ``hook`` in turn."""
    for feature in _features:
        value = getattr(feature, hook)(value, cfg)
    return value


def _broadcast(event: str, **kwargs: Any) -> None:
    for feature in _features:
        getattr(feature, event)(**kwargs)


def margin_loss(loss: Callable, cfg: Any) -> Callable:
    return _filtered("margin_loss", loss, cfg)


def partial_fc_class(pfc_class: type, cfg: Any) -> type:
    return _filtered("partial_fc_class", pfc_class, cfg)


def dataloader_factory(factory: Callable, cfg: Any) -> Callable:
    return _filtered("dataloader_factory", factory, cfg)


def verification_class(callback_class: type, cfg: Any) -> type:
    return _filtered("verification_class", callback_class, cfg)


def on_train_start(**kwargs: Any) -> None:
    _broadcast("on_train_start", **kwargs)


def on_optimizer_step(**kwargs: Any) -> None:
    _broadcast("on_optimizer_step", **kwargs)


def on_epoch_end(**kwargs: Any) -> None:
    _broadcast("on_epoch_end", **kwargs)


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
    _broadcast("on_train_end")
