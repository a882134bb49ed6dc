"""The registry of margin losses, selected by ``config.margin_loss``."""
from craft_plugin.registry import Registry

MARGIN_LOSSES: Registry = Registry("margin loss", "margin_loss")
