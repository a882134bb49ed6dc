"""ElasticFace presets: the values of the official ElasticFace training config (Boutros et al.,
arXiv 2109.09416); for Cos+ the paper's text says sigma=0.025, the released config 0.02 (ours)."""
from craft_plugin.presets.registry import register_loss_preset

SOURCE = "ElasticFace, arXiv 2109.09416; official config"

register_loss_preset("elasticface-arc", {"name": "elasticface-arc", "s": 64.0, "m": 0.5, "sigma": 0.05},
                     f"{SOURCE} ElasticArcFace s=64 m=0.5 std=0.05")
register_loss_preset("elasticface-arc-plus", {"name": "elasticface-arc-plus", "s": 64.0, "m": 0.5, "sigma": 0.0175},
                     f"{SOURCE} ElasticArcFacePlus s=64 m=0.5 std=0.0175")
register_loss_preset("elasticface-cos", {"name": "elasticface-cos", "s": 64.0, "m": 0.35, "sigma": 0.05},
                     f"{SOURCE} ElasticCosFace s=64 m=0.35 std=0.05")
register_loss_preset("elasticface-cos-plus", {"name": "elasticface-cos-plus", "s": 64.0, "m": 0.35, "sigma": 0.02},
                     f"{SOURCE} ElasticCosFacePlus s=64 m=0.35 std=0.02 (paper text: 0.025)")
