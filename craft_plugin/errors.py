"""Error types the plugin raises for bad configuration and bad data."""
from __future__ import annotations


class ConfigError(ValueError):
    """A config value is not allowed. The message names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str):
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"config.{key} = {value!r} is not allowed: expected {allowed}")


class RecordError(ValueError):
    """A record file is malformed. The message names the file, the byte offset and the problem."""

    def __init__(self, path: str, offset: int, problem: str):
        self.path = path
        self.offset = offset
        self.problem = problem
        super().__init__(f"{path} at byte offset {offset}: {problem}")
