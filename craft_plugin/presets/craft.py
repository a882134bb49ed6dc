"""CRAFT alone: only ``reactivation = "craft"`` with craft-plugin's defaults; the loss stays margin_list."""
from craft_plugin.presets.registry import PRESETS, Preset

PRESETS.register("craft")(Preset("craft", {"reactivation": "craft"},
                                 "CRAFT alone with craft-plugin's defaults; the loss stays config.margin_list"))
