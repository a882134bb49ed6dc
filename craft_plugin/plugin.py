"""The ``arcface_torch.plugins`` entry point: hook functions called by the patched ``train_v2.py``.

Hook API version 1 (see :mod:`craft_plugin.plugin_hooks` and docs/patch.md). The ``config`` hook
resolves presets, validates the plugin's keys, builds the enabled ones of :data:`FEATURES` and
refuses upstream keys their replacements would drop (:mod:`craft_plugin.upstream_keys`);
every later hook goes straight to the enabled features that define a method of its name, in the
order of :data:`FEATURES`. Plugin state is stored in the checkpoint dict under ``CHECKPOINT_KEY``,
one entry per stateful feature plus ``CONFIG_RECORD``: each such feature's config value (JSON) when
saved. On resume a feature whose config value changed since, or whose saved state does not fit it,
starts fresh with a warning saying which state was dropped and why.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable, Dict, List

from craft_plugin.amp import step_was_skipped
from craft_plugin.config import resolve_config
from craft_plugin.data.rec_reader_feature import RecReaderFeature
from craft_plugin.losses.margin_loss_feature import MarginLossFeature
from craft_plugin.reactivation.reactivation_feature import ReactivationFeature
from craft_plugin.upstream_keys import check_replaced_keys

HOOK_API = 1
CHECKPOINT_KEY = "craft_plugin"
CONFIG_RECORD = "config"    # under CHECKPOINT_KEY: {feature name: its config value as JSON}

# each is switched on by the config key of its ``name``; ``from_config`` returns None when off
FEATURES = (MarginLossFeature, ReactivationFeature, RecReaderFeature)

_enabled: List[Any] = []
_config_values: Dict[str, str] = {}


def config_value(cfg: Any, name: str) -> str:
    """``config.<name>`` (presets resolved) as canonical JSON, to compare across a resume."""
    return json.dumps(cfg.get(name), sort_keys=True, default=repr)


def build_features(cfg: Any) -> List[Any]:
    """The enabled features for ``cfg`` (empty when the config enables none)."""
    return [feature for feature in (cls.from_config(cfg) for cls in FEATURES) if feature is not None]


def feature(name: str) -> Any:
    """The enabled feature ``name`` (its config key) of the current run."""
    for enabled in _enabled:
        if enabled.name == name:
            return enabled
    raise LookupError(f"craft-plugin feature {name!r} is not enabled (enabled: {[f.name for f in _enabled]})")


def _implementing(hook: str) -> List[Any]:
    return [f for f in _enabled if hasattr(f, hook)]


def config(cfg: Any, api: int = HOOK_API) -> Any:
    global _enabled, _config_values
    if api != HOOK_API:
        raise RuntimeError(
            f"craft-plugin speaks arcface_torch hook API {HOOK_API}, the patched train_v2.py "
            f"speaks {api}: re-apply the patch with `craft-plugin patch` from this craft-plugin")
    cfg = resolve_config(cfg)
    _enabled = build_features(cfg)
    check_replaced_keys(cfg, _enabled)  # upstream keys a replaced part would have read: honoured or refused
    _config_values = {f.name: config_value(cfg, f.name) for f in _enabled}
    if _enabled:
        logging.info("craft-plugin enabled: %s", ", ".join(f.name for f in _enabled))
    return cfg


def _filter(hook: str) -> Callable[[Any, Any], Any]:
    """A filter hook: ``value`` passed through each enabled feature's ``hook(value, cfg)``."""
    def run(value: Any, cfg: Any) -> Any:
        for enabled in _implementing(hook):
            value = getattr(enabled, hook)(value, cfg)
        return value

    run.__name__ = run.__qualname__ = hook
    return run


def _event(hook: str) -> Callable[..., None]:
    """An event hook: each enabled feature's ``hook(**kwargs)``."""
    def run(**kwargs: Any) -> None:
        for enabled in _implementing(hook):
            getattr(enabled, hook)(**kwargs)

    run.__name__ = run.__qualname__ = hook
    return run


margin_loss = _filter("margin_loss")
partial_fc_class = _filter("partial_fc_class")
dataloader_factory = _filter("dataloader_factory")
verification_class = _filter("verification_class")
on_train_start = _event("on_train_start")
on_epoch_end = _event("on_epoch_end")


def on_optimizer_step(*, global_step: int, optimizer: Any, scaler: Any) -> None:
    """Tells the features of a step taken; whether GradScaler skipped it is read once, here, and
    only when a feature listens (see :func:`craft_plugin.amp.step_was_skipped`)."""
    listening = _implementing("on_optimizer_step")
    if listening and not step_was_skipped(scaler, optimizer):
        for enabled in listening:
            enabled.on_optimizer_step()


def on_save_checkpoint(checkpoint: dict) -> None:
    stateful = _implementing("state_dict")
    if stateful:
        checkpoint[CHECKPOINT_KEY] = {f.name: f.state_dict() for f in stateful}
        checkpoint[CHECKPOINT_KEY][CONFIG_RECORD] = {f.name: _config_values[f.name] for f in stateful}


def on_resume(checkpoint: dict) -> None:
    states = checkpoint.get(CHECKPOINT_KEY, {})
    saved_values = states.get(CONFIG_RECORD, {})
    for enabled in _implementing("load_state_dict"):
        name = enabled.name
        if name not in states:
            logging.warning("craft-plugin: the checkpoint holds no state for %r; it starts fresh", name)
            continue
        now = _config_values.get(name)
        if name in saved_values and saved_values[name] != now:
            logging.warning("craft-plugin: config.%s changed since the checkpoint was saved (then %s, now %s): "
                            "its saved state (%s) is dropped and %s starts fresh", name, saved_values[name], now,
                            ", ".join(sorted(states[name])), name)
            continue
        try:
            enabled.load_state_dict(states[name])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # a checkpoint from before CONFIG_RECORD
            logging.warning("craft-plugin: the checkpoint's %s state (%s) does not fit config.%s = %s "
                            "(%s: %s): it is dropped and %s starts fresh", name, ", ".join(sorted(states[name])),
                            name, now, type(exc).__name__, exc, name)
