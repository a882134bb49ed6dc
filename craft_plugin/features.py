"""The plugin's features and the hook methods each may implement.

A feature is switched on by one config key (``reactivation``, ``margin_loss``, ``rec_reader``).
``Feature.from_config`` validates that key and returns ``None`` when the feature is off, so a
config that enables nothing leaves every hook a no-op and training exactly upstream's.
Register a feature with ``@FEATURES.register("<config key>")``; :mod:`craft_plugin.plugin`
dispatches the hook calls of ``train_v2.py`` to the enabled ones in registration-name order.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from craft_plugin.registry import Registry

FEATURES: Registry = Registry("feature", "feature")


class Feature:
    """Base class: every hook is a no-op; filters return their value unchanged."""

    name: str = ""

    @classmethod
    def from_config(cls, cfg: Any) -> Optional["Feature"]:
        raise NotImplementedError

    # filters: return the value to use
    def margin_loss(self, loss: Callable, cfg: Any) -> Callable:
        return loss

    def partial_fc_class(self, pfc_class: type, cfg: Any) -> type:
        return pfc_class

    def dataloader_factory(self, factory: Callable, cfg: Any) -> Callable:
        return factory

    def verification_class(self, callback_class: type, cfg: Any) -> type:
        return callback_class

    # events
    def on_train_start(self, *, cfg: Any, backbone: Any, partial_fc: Any, optimizer: Any,
                       lr_scheduler: Any, summary_writer: Any, rank: int, world_size: int) -> None:
        pass

    def on_optimizer_step(self, *, global_step: int, optimizer: Any, scaler: Any) -> None:
        pass

    def on_epoch_end(self, *, epoch: int, global_step: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def on_train_end(self) -> None:
        pass
