"""``config.reactivation``: parsing and validation into :class:`ReactivationOptions`.

``None``/``False`` = off; ``"craft"`` or ``True`` = our defaults; a dict overrides any subset of
the fields below. Every default is our choice (the paper publishes none); see docs/craft.md.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from craft_plugin.errors import ConfigError
from craft_plugin.reactivation.detection import CRITERIA
from craft_plugin.reactivation.strategies import STRATEGIES
from craft_plugin.validation import boolean, integer, non_negative, number, one_of, positive, seed_value

KEY = "reactivation"


@dataclass(frozen=True)
class ReactivationOptions:
    layer: Optional[str] = None          # module name; None = first Conv2d with 3 input channels
    criterion: str = "relative"          # weight norm "relative" to the strong filters or "absolute"; "activation" (ReDo)
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

    def __post_init__(self) -> None:
        if self.layer is not None and not (isinstance(self.layer, str) and self.layer):
            raise ConfigError(f"{KEY}.layer", self.layer, "None or a module name")
        one_of(f"{KEY}.criterion", self.criterion, CRITERIA)
        if self.criterion != "absolute":
            number(f"{KEY}.threshold", self.threshold, lambda v: 0 < v < 1, f"a number in (0, 1) when criterion is {self.criterion}")
        positive(f"{KEY}.threshold", self.threshold)
        number(f"{KEY}.reference_quantile", self.reference_quantile, lambda v: 0 <= v < 1, "a number in [0, 1)")
        integer(f"{KEY}.every", self.every, 0)
        boolean(f"{KEY}.at_epoch_end", self.at_epoch_end)
        integer(f"{KEY}.start", self.start, 0)
        if self.stop is not None:
            integer(f"{KEY}.stop", self.stop, self.start)
        integer(f"{KEY}.max_revive", self.max_revive, 1)
        if not isinstance(self.strategy, str):
            raise ConfigError(f"{KEY}.strategy", self.strategy, "a strategy name")
        STRATEGIES.get(self.strategy)
        integer(f"{KEY}.parents", self.parents, 1)
        non_negative(f"{KEY}.noise", self.noise)
        boolean(f"{KEY}.reset_followers", self.reset_followers)
        seed_value(f"{KEY}.seed", self.seed)


def parse_options(value: Any) -> Optional[ReactivationOptions]:
    """``config.reactivation`` -> options, or ``None`` when CRAFT is off."""
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
    return ReactivationOptions(**value)
