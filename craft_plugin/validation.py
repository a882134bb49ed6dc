"""Checks of config values, shared by every family of options (margin losses, re-activation).

Each helper returns the value (numbers as ``float``, integers as ``int``) or raises
:class:`~craft_plugin.errors.ConfigError` naming the key, the value and what is allowed. Booleans
are not numbers here: ``True`` is refused where a number or an integer is expected.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

from craft_plugin.errors import ConfigError


def number(key: str, value: Any, test: Callable[[float], bool], allowed: str) -> float:
    """A finite real number that passes ``test``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not test(value):
        raise ConfigError(key, value, allowed)
    return float(value)


def positive(key: str, value: Any) -> float:
    return number(key, value, lambda v: v > 0, "a number > 0")


def non_negative(key: str, value: Any) -> float:
    return number(key, value, lambda v: v >= 0, "a number >= 0")


def in_range(key: str, value: Any, low: float, high: float) -> float:
    return number(key, value, lambda v: low <= v <= high, f"a number in [{low:g}, {high:g}]")


def integer(key: str, value: Any, minimum: Optional[int] = None) -> int:
    """An ``int`` (not a bool), at least ``minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        raise ConfigError(key, value, "an integer" if minimum is None else f"an integer >= {minimum}")
    return value


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "True or False")
    return value


def one_of(key: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(key, value, f"one of {list(choices)}")
    return value
