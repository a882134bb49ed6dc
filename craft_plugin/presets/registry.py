"""The registry of named presets (``config.preset``) and how a loss preset registers itself."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

from craft_plugin.registry import Registry


@dataclass(frozen=True)
class Preset:
    name: str
    values: Dict[str, Any]
    source: str


PRESETS: Registry = Registry("preset", "preset")


def register_loss_preset(name: str, margin_loss: Dict[str, Any], source: str) -> None:
    """Registers ``name`` (sets ``margin_loss``) and its twin ``name+craft`` (also ``reactivation = "craft"``)."""
    PRESETS.register(name)(Preset(name, {"margin_loss": margin_loss}, source))
    PRESETS.register(f"{name}+craft")(Preset(f"{name}+craft", {"margin_loss": margin_loss, "reactivation": "craft"},
                                             source + "; plus CRAFT with craft-plugin's defaults (docs/craft.md)"))
