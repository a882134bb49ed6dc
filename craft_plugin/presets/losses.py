"""One preset per registered margin loss (and its ``+craft`` twin): the loss's own constructor
defaults, cited from the loss class's ``source``, so a preset never restates a number."""
from craft_plugin.losses import MARGIN_LOSSES, default_parameters
from craft_plugin.presets.registry import register_loss_preset

for name in MARGIN_LOSSES.names():
    register_loss_preset(name, {"name": name, **default_parameters(name)}, MARGIN_LOSSES.get(name).source)
