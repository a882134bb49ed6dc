"""Finding the first-layer convolution and the per-channel modules that follow it.

The layer is the first ``nn.Conv2d`` with 3 input channels in module order (through DDP's
``.module``): iresnet's ``conv1``, mobilefacenet's first ``ConvBlock`` conv, a ViT's patch
embedding. Its followers are the first ``BatchNorm2d`` and the first ``PReLU`` with one entry
per output channel that come after it in module order and before the next convolution; either
may be absent (a ViT has neither).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import nn

from craft_plugin.errors import ConfigError


@dataclass
class FirstLayer:
    name: str
    conv: nn.Conv2d
    bn: Optional[nn.BatchNorm2d]
    prelu: Optional[nn.PReLU]


def unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def find_first_layer(model: nn.Module, name: Optional[str] = None) -> FirstLayer:
    modules = list(unwrap(model).named_modules())
    if name is None:
        position = next((i for i, (_, m) in enumerate(modules)
                         if isinstance(m, nn.Conv2d) and m.in_channels == 3), None)
        if position is None:
            raise LookupError("the model has no Conv2d with 3 input channels; set "
                              "config.reactivation['layer'] to the name of the first conv")
    else:
        position = next((i for i, (n, _) in enumerate(modules) if n == name), None)
        if position is None or not isinstance(modules[position][1], nn.Conv2d):
            convs = [n for n, m in modules if isinstance(m, nn.Conv2d)][:5]
            raise ConfigError("reactivation.layer", name, f"the name of a Conv2d module, e.g. {convs}")
    conv_name, conv = modules[position]
    bn = prelu = None
    for _, module in modules[position + 1:]:
        if isinstance(module, nn.Conv2d):
            break
        if bn is None and isinstance(module, nn.BatchNorm2d) and module.num_features == conv.out_channels:
            bn = module
        if prelu is None and isinstance(module, nn.PReLU) and module.num_parameters == conv.out_channels:
            prelu = module
    return FirstLayer(conv_name, conv, bn, prelu)
