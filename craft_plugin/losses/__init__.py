"""Margin losses for arcface_torch's Partial FC, selected by ``config.margin_loss``.

``config.margin_loss = "<name>"`` or ``{"name": "<name>", <parameters>}``; names are those of
:data:`MARGIN_LOSSES` (``craft-plugin presets`` lists them with values). Adding a loss is one
module registering a :class:`~craft_plugin.losses.base.MarginLoss` subclass plus one import here.
"""
from __future__ import annotations

import inspect
from typing import Union

from craft_plugin.errors import ConfigError
from craft_plugin.losses import adaface, arcface, cosface, curricularface, elasticface, magface, sphereface_r  # noqa: F401  (registration)
from craft_plugin.losses.base import MarginLoss
from craft_plugin.losses.registry import MARGIN_LOSSES


def build_margin_loss(spec: Union[str, dict]) -> MarginLoss:
    """A margin loss from ``config.margin_loss``."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError("margin_loss", spec, 'a loss name or a dict with a "name" key')
    params = dict(spec)
    cls = MARGIN_LOSSES.get(params.pop("name"))
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for key in params:
        if key not in allowed:
            raise ConfigError(f"margin_loss.{key}", params[key], f"one of the parameters {allowed} of {spec['name']!r}")
    return cls(**params)


def default_parameters(name: str) -> dict:
    """The parameters and defaults of loss ``name`` (the constructor's: None where
    ``defaults_by`` derives the value)."""
    signature = inspect.signature(MARGIN_LOSSES.get(name).__init__)
    return {k: (list(p.default) if isinstance(p.default, tuple) else p.default)
            for k, p in signature.parameters.items() if k != "self"}


def defaults_in_force(name: str) -> dict:
    """``default_parameters``, a derived default shown as ``{"per <other>": {value: default}}``."""
    params = default_parameters(name)
    for key, (other, table) in MARGIN_LOSSES.get(name).defaults_by.items():
        if params.get(key) is None:
            params[key] = {f"per {other}": dict(table)}
    return params


def values_in_force(spec: Union[str, dict]) -> dict:
    """``config.margin_loss`` with every derived default left unset (None) replaced by the value in
    force (SphereFace-R's lw for its norm)."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    defaults = default_parameters(spec["name"])
    for key, (other, table) in MARGIN_LOSSES.get(spec["name"]).defaults_by.items():
        if spec.get(key) is None:
            spec[key] = table[spec.get(other, defaults[other])]
    return spec


__all__ = ["MARGIN_LOSSES", "MarginLoss", "build_margin_loss", "default_parameters", "defaults_in_force",
           "values_in_force"]
