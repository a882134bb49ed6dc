"""``config.margin_loss`` as a plugin feature: replaces upstream's CombinedMarginLoss, picks the
lean (chunked) Partial FC when ``config.partial_fc`` is set, else the norm-aware Partial FC for
losses that weight the loss or need feature norms, advances margin
schedules on real optimizer steps and keeps the loss's state (step, generator) in checkpoints.
Upstream's ``config.interclass_filtering_threshold``, which CombinedMarginLoss would have read, is
handed to the loss (:class:`~craft_plugin.losses.base.MarginLoss` applies it on both paths)."""
from __future__ import annotations

from typing import Any, Callable, Optional

from craft_plugin.losses import MarginLoss, build_margin_loss
from craft_plugin.losses.norm_aware_pfc import norm_aware_partial_fc
from craft_plugin.partial_fc.lean import check_chunkable, lean_partial_fc
from craft_plugin.partial_fc.options import LeanOptions, lean_options
from craft_plugin.validation import non_negative

THRESHOLD_KEY = "interclass_filtering_threshold"


class MarginLossFeature:
    """Hooks: ``margin_loss``, ``partial_fc_class``, ``on_optimizer_step``, checkpoint state."""

    name = "margin_loss"

    def __init__(self, loss: MarginLoss, lean: Optional[LeanOptions] = None):
        self.loss = loss
        self.lean = lean
        if lean is not None:
            check_chunkable(loss, lean.chunk)

    @classmethod
    def from_config(cls, cfg: Any) -> Optional["MarginLossFeature"]:
        spec = cfg.get("margin_loss")
        lean = lean_options(cfg)  # validated (and refused without margin_loss) even when the feature is off
        if spec is None:
            return None
        loss = build_margin_loss(spec)
        loss.interclass_filtering_threshold = non_negative(THRESHOLD_KEY, cfg.get(THRESHOLD_KEY, 0))
        return cls(loss, lean)

    def margin_loss(self, loss: Callable, cfg: Any) -> Callable:
        return self.loss

    def partial_fc_class(self, pfc_class: type, cfg: Any) -> type:
        if self.lean is not None:  # it handles feature norms and total_loss itself
            return lean_partial_fc(pfc_class, *self.lean)
        custom = type(self.loss).total_loss is not MarginLoss.total_loss
        return norm_aware_partial_fc(pfc_class) if self.loss.needs_norms or custom else pfc_class

    def on_optimizer_step(self) -> None:
        """An optimizer step was taken (the plugin does not call this for a skipped AMP step)."""
        self.loss.on_step()

    def state_dict(self) -> dict:
        return self.loss.extra_state()

    def load_state_dict(self, state: dict) -> None:
        self.loss.load_extra_state(state)
