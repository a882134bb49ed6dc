"""Error types the plugin raises for bad configuration and bad data."""
from __future__ import annotations

from typing import Optional


class ConfigError(ValueError):
    """A config value is not allowed. The message names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str):
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"config.{key} = {value!r} is not allowed: expected {allowed}")


class RecordError(ValueError):
    """A record file is malformed. The message names the file, the byte offset and the problem.

    ``RecordError(message)`` alone is what a DataLoader re-raises from a worker (its message then
    holds the worker's, file and offset included), so the type survives the worker boundary."""

    def __init__(self, path: str, offset: Optional[int] = None, problem: Optional[str] = None):
        self.path = path
        self.offset = offset
        self.problem = path if problem is None else problem
        super().__init__(path if problem is None else f"{path} at byte offset {offset}: {problem}")
