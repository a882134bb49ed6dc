"""A small named registry used for every family in the plugin (losses, re-init strategies, presets).

Adding a member is one decorated definition in its own module plus one import line in the family's
``__init__``. Lookups of unknown names raise :class:`ConfigError` naming the config key and the
allowed names.
"""
from __future__ import annotations

from typing import Callable, Dict, Generic, List, TypeVar

from craft_plugin.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> member mapping for one family; ``key`` is the config key that selects a member."""

    def __init__(self, family: str, key: str):
        self.family = family
        self.key = key
        self._members: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(member: T) -> T:
            if name in self._members:
                raise ValueError(f"{self.family} {name!r} is registered twice")
            self._members[name] = member
            return member

        return add

    def get(self, name: str) -> T:
        if not isinstance(name, str) or name not in self._members:
            raise ConfigError(self.key, name, f"one of {self.names()}")
        return self._members[name]

    def names(self) -> List[str]:
        return sorted(self._members)
