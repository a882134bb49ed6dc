"""Named presets, used as ``config.preset = "<name>"`` in an arcface_torch config.

A preset fills the plugin's keys (``margin_loss``, ``reactivation``) that the config does not set
itself; keys set explicitly win. Every loss preset has a ``+craft`` twin that also sets
``reactivation = "craft"``. Sources of the numbers are in each entry's ``source``.
"""
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

LOSS_PRESETS = [
    ("arcface", {"name": "arcface", "s": 64.0, "m": 0.5},
     "ArcFace, arXiv 1801.07698; s=64, m=0.5 as arcface_torch's configs (margin_list (1.0, 0.5, 0.0))"),
    ("cosface", {"name": "cosface", "s": 64.0, "m": 0.4},
     "CosFace, arXiv 1801.09414; s=64, m=0.4 as arcface_torch's configs (margin_list (1.0, 0.0, 0.4))"),
    ("elasticface-arc", {"name": "elasticface-arc", "s": 64.0, "m": 0.5, "sigma": 0.05},
     "ElasticFace, arXiv 2109.09416; official config ElasticArcFace s=64 m=0.5 std=0.05"),
    ("elasticface-arc-plus", {"name": "elasticface-arc-plus", "s": 64.0, "m": 0.5, "sigma": 0.0175},
     "ElasticFace, arXiv 2109.09416; official config ElasticArcFacePlus s=64 m=0.5 std=0.0175"),
    ("elasticface-cos", {"name": "elasticface-cos", "s": 64.0, "m": 0.35, "sigma": 0.05},
     "ElasticFace, arXiv 2109.09416; official config ElasticCosFace s=64 m=0.35 std=0.05"),
    ("elasticface-cos-plus", {"name": "elasticface-cos-plus", "s": 64.0, "m": 0.35, "sigma": 0.02},
     "ElasticFace, arXiv 2109.09416; official config ElasticCosFacePlus s=64 m=0.35 std=0.02 (paper text: 0.025)"),
    ("sphereface-r", {"name": "sphereface-r", "s": 30.0, "m": 1.5, "magnitude": "v0", "norm": "hard", "lw": 50.0},
     "SphereFace-R, arXiv 2109.05565; hard feature normalisation, v0, s=30 m=1.5 lw=50 as the authors' OpenSphere"),
]

for _name, _loss, _source in LOSS_PRESETS:
    PRESETS.register(_name)(Preset(_name, {"margin_loss": _loss}, _source))
    PRESETS.register(f"{_name}+craft")(Preset(f"{_name}+craft", {"margin_loss": _loss, "reactivation": "craft"},
                                              _source + "; plus CRAFT with craft-plugin's defaults (docs/craft.md)"))
PRESETS.register("craft")(Preset("craft", {"reactivation": "craft"},
                                 "CRAFT alone with craft-plugin's defaults; the loss stays config.margin_list"))


def preset_values(name: str) -> Dict[str, Any]:
    """The plugin keys preset ``name`` sets (a fresh copy)."""
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS.get(name).values.items()}
