"""SphereFace-R preset: hard feature normalisation, magnitude v0, s=30, m=1.5, lw=50, the settings of
the authors' OpenSphere SphereFace-R config (Liu et al., arXiv 2109.05565)."""
from craft_plugin.presets.registry import register_loss_preset

register_loss_preset("sphereface-r",
                     {"name": "sphereface-r", "s": 30.0, "m": 1.5, "magnitude": "v0", "norm": "hard", "lw": 50.0},
                     "SphereFace-R, arXiv 2109.05565; hard feature normalisation, v0, s=30 m=1.5 lw=50 as the authors' OpenSphere")
