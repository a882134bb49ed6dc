"""``config.reactivation`` as a plugin feature: builds the :class:`Reactivator` at train start
and forwards real optimizer steps, epoch ends and checkpoint state to it."""
from __future__ import annotations

from typing import Any, Optional

from craft_plugin.reactivation.controller import Reactivator
from craft_plugin.reactivation.layer import find_first_layer
from craft_plugin.reactivation.options import ReactivationOptions, parse_options


class ReactivationFeature:
    """Hooks: ``on_train_start``, ``on_optimizer_step``, ``on_epoch_end``, checkpoint state."""

    name = "reactivation"

    def __init__(self, options: ReactivationOptions):
        self.options = options
        self.reactivator: Optional[Reactivator] = None

    @classmethod
    def from_config(cls, cfg: Any) -> Optional["ReactivationFeature"]:
        options = parse_options(cfg.get("reactivation"))
        return None if options is None else cls(options)

    def on_train_start(self, *, backbone: Any, optimizer: Any, summary_writer: Any,
                       world_size: int, **_: Any) -> None:
        layer = find_first_layer(backbone, self.options.layer)
        self.reactivator = Reactivator(self.options, layer, optimizer, summary_writer, world_size)

    def on_optimizer_step(self) -> None:
        """An optimizer step was taken (the plugin does not call this for a skipped AMP step)."""
        self.reactivator.step()

    def on_epoch_end(self, *, epoch: int, global_step: int) -> None:
        self.reactivator.epoch_end()

    def state_dict(self) -> dict:
        return self.reactivator.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.reactivator.load_state_dict(state)
