"""``config.partial_fc``: the lean (chunked) Partial FC, off by default.

``config.partial_fc = {"chunk": 8192, "recompute": True}`` (``{}`` takes the defaults) replaces
the Partial FC class with :func:`craft_plugin.partial_fc.lean.lean_partial_fc` of it through the
``partial_fc_class`` hook. ``"recompute": False`` keeps each chunk's cosines from the forward for
the backward (one (B, C) buffer, 3 GEMMs per step) instead of recomputing them (4 GEMMs, no
(B, C) buffer). It needs ``config.margin_loss`` (a registered loss the chunked path
computes, e.g. ``"arcface"`` for upstream's ``margin_list = (1.0, 0.5, 0.0)``): upstream's own
CombinedMarginLoss works on the materialised logits only.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

from craft_plugin.errors import ConfigError
from craft_plugin.partial_fc.lean import DEFAULT_CHUNK, DEFAULT_RECOMPUTE
from craft_plugin.validation import boolean, integer

KEYS = ("chunk", "recompute")


class LeanOptions(NamedTuple):
    """The arguments of :func:`craft_plugin.partial_fc.lean.lean_partial_fc` after ``base``."""

    chunk: int
    recompute: bool


def lean_options(cfg: Any) -> Optional[LeanOptions]:
    """Chunk size and recompute flag from ``config.partial_fc``, or None when it is unset."""
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
    return LeanOptions(integer("partial_fc.chunk", spec.get("chunk", DEFAULT_CHUNK), 1),
                       boolean("partial_fc.recompute", spec.get("recompute", DEFAULT_RECOMPUTE)))
