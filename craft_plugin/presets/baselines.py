"""ArcFace and CosFace baseline presets (for comparison), with arcface_torch's own numbers."""
from craft_plugin.presets.registry import register_loss_preset

register_loss_preset("arcface", {"name": "arcface", "s": 64.0, "m": 0.5},
                     "ArcFace, arXiv 1801.07698; s=64, m=0.5 as arcface_torch's configs (margin_list (1.0, 0.5, 0.0))")
register_loss_preset("cosface", {"name": "cosface", "s": 64.0, "m": 0.4},
                     "CosFace, arXiv 1801.09414; s=64, m=0.4 as arcface_torch's configs (margin_list (1.0, 0.0, 0.4))")
