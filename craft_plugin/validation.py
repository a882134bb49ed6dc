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
    """A finite real number that passes ``test`` (an int too large for a float is refused too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, value, allowed)
    try:
        as_float = float(value)
    except OverflowError:
        raise ConfigError(key, value, allowed) from None
    if not math.isfinite(as_float) or not test(as_float):
        raise ConfigError(key, value, allowed)
    return as_float


def positive(key: str, value: Any) -> float:
    return number(key, value, lambda v: v > 0, "a number > 0")


def non_negative(key: str, value: Any) -> float:
    return number(key, value, lambda v: v >= 0, "a number >= 0")


def in_range(key: str, value: Any, low: float, high: float) -> float:
    return number(key, value, lambda v: low <= v <= high, f"a number in [{low:g}, {high:g}]")


SEED_MAX = 2 ** 64 - 1   # torch.Generator.manual_seed's largest seed


def integer(key: str, value: Any, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
    """An ``int`` (not a bool), at least ``minimum`` and at most ``maximum`` when given."""
    if (isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum)
            or (maximum is not None and value > maximum)):
        bounds = [f">= {minimum}"] * (minimum is not None) + [f"<= {maximum}"] * (maximum is not None)
        raise ConfigError(key, value, " and ".join(["an integer"] + bounds).replace("integer and", "integer", 1))
    return value


def seed_value(key: str, value: Any) -> int:
    """A random seed torch accepts: an integer in [0, 2**64 - 1]."""
    return integer(key, value, 0, SEED_MAX)


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "True or False")
    return value


def one_of(key: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(key, value, f"one of {list(choices)}")
    return value
