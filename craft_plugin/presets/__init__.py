"""Named presets, used as ``config.preset = "<name>"`` in an arcface_torch config.

A preset fills the plugin's keys (``margin_loss``, ``reactivation``) that the config does not set
itself; keys set explicitly win. Every loss preset has a ``+craft`` twin that also sets
``reactivation = "craft"``. Every margin loss has a preset made from its registered defaults and
citation (:mod:`craft_plugin.presets.losses`); other presets register in their own module.
"""
from __future__ import annotations

from typing import Any, Dict

from craft_plugin.presets import craft, losses  # noqa: F401  (registration)
from craft_plugin.presets.registry import PRESETS, Preset


def preset_values(name: str) -> Dict[str, Any]:
    """The plugin keys preset ``name`` sets (a fresh copy)."""
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS.get(name).values.items()}


__all__ = ["PRESETS", "Preset", "preset_values"]
