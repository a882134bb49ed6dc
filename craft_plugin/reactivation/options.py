"""``config.reactivation``: parsing and validation into :class:`ReactivationOptions`.

``None``/``False`` = off; ``"craft"`` or ``True`` = our defaults; a dict overrides any subset of
the fields below. Every default is our choice (the paper publishes none); see docs/craft.md.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from craft_plugin.errors import ConfigError

KEY = "reactivation"


@dataclass(frozen=True)
class ReactivationOptions:
    layer: Optional[str] = None          # module name; None = first Conv2d with 3 input channels
    criterion: str = "relative"          # "relative" to the strong filters, or "absolute"
    threshold: float = 0.1               # inactive: norm < threshold (* reference norm if relative)
    reference_quantile: float = 0.75     # relative: reference = median norm of filters above this quantile
    every: int = 1000                    # check every N real optimizer steps (0 = never by steps)
    at_epoch_end: bool = True            # also check at each epoch end
    start: int = 1000                    # first step at which a check may run
    stop: Optional[int] = None           # last step at which a check may run (None = no end)
    max_revive: int = 16                 # cap on filters revived by one check
    strategy: str = "craft"              # re-initialisation strategy (registry name)
    parents: int = 3                     # craft: strong filters combined into one new filter
    noise: float = 0.2                   # craft: perturbation, relative to the combination's norm
    reset_followers: bool = True         # also reset the channel's BatchNorm and PReLU
    seed: int = 0                        # seed of the plugin's own generator


CHECKS = {
    "criterion": (lambda v: v in ("relative", "absolute"), '"relative" or "absolute"'),
    "threshold": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
                  "a number > 0 (and < 1 when criterion is relative)"),
    "reference_quantile": (lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "a number in [0, 1)"),
    "every": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
    "at_epoch_end": (lambda v: isinstance(v, bool), "True or False"),
    "start": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
    "stop": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0),
             "None or an integer >= start"),
    "max_revive": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "strategy": (lambda v: isinstance(v, str), "a strategy name"),
    "parents": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "noise": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0, "a number >= 0"),
    "reset_followers": (lambda v: isinstance(v, bool), "True or False"),
    "layer": (lambda v: v is None or (isinstance(v, str) and v), "None or a module name"),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
}


def parse_options(value: Any) -> Optional[ReactivationOptions]:
    """``config.reactivation`` -> options, or ``None`` when CRAFT is off."""
    from craft_plugin.reactivation.strategies import STRATEGIES

    if value is None or value is False:
        return None
    if value is True or value == "craft":
        return ReactivationOptions()
    if not isinstance(value, dict):
        raise ConfigError(KEY, value, 'None/False (off), "craft" (our defaults) or a dict of options')
    fields = {f.name for f in dataclasses.fields(ReactivationOptions)}
    for key, item in value.items():
        if key not in fields:
            raise ConfigError(f"{KEY}.{key}", item, f"one of the option names {sorted(fields)}")
        ok, allowed = CHECKS[key]
        if not ok(item):
            raise ConfigError(f"{KEY}.{key}", item, allowed)
    options = ReactivationOptions(**value)
    if options.criterion == "relative" and options.threshold >= 1:
        raise ConfigError(f"{KEY}.threshold", options.threshold, "a number in (0, 1) when criterion is relative")
    if options.stop is not None and options.stop < options.start:
        raise ConfigError(f"{KEY}.stop", options.stop, f"None or an integer >= start ({options.start})")
    STRATEGIES.get(options.strategy)
    return options
