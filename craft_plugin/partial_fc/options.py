"""``config.partial_fc``: the lean (chunked) Partial FC, off by default.

``config.partial_fc = {"chunk": 8192}`` (``{}`` takes the default chunk) replaces the Partial FC
class with :func:`craft_plugin.partial_fc.lean.lean_partial_fc` of it through the
``partial_fc_class`` hook. It needs ``config.margin_loss`` (a registered loss the chunked path
computes, e.g. ``"arcface"`` for upstream's ``margin_list = (1.0, 0.5, 0.0)``): upstream's own
CombinedMarginLoss works on the materialised logits only.
"""
from __future__ import annotations

from typing import Any, Optional

from craft_plugin.errors import ConfigError
from craft_plugin.partial_fc.lean import DEFAULT_CHUNK
from craft_plugin.validation import integer

KEYS = ("chunk",)


def lean_chunk(cfg: Any) -> Optional[int]:
    """Classes per chunk from ``config.partial_fc``, or None when it is unset."""
    spec = cfg.get("partial_fc")
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise ConfigError("partial_fc", spec, f'a dict such as {{"chunk": {DEFAULT_CHUNK}}}')
    for key in spec:
        if key not in KEYS:
            raise ConfigError(f"partial_fc.{key}", spec[key], f"one of the keys {list(KEYS)}")
    if cfg.get("margin_loss") is None:
        raise ConfigError("partial_fc", spec, 'set together with config.margin_loss (e.g. "arcface" for '
                                              "margin_list (1.0, 0.5, 0.0))")
    return integer("partial_fc.chunk", spec.get("chunk", DEFAULT_CHUNK), 1)
