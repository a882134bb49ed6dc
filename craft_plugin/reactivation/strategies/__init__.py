"""Re-initialisation strategies for revived filters (one module each, registered by name).

A strategy is ``fn(weight, strong, count, generator, options) -> Tensor (count, in, kh, kw)``:
``weight`` is a float32 CPU copy of the layer's weight, ``strong`` the indices of the filters that
stay (may be empty only for strategies that do not need them), ``generator`` the plugin's
seeded CPU generator.
"""
from craft_plugin.registry import Registry

STRATEGIES: Registry = Registry("re-initialisation strategy", "reactivation.strategy")

from craft_plugin.reactivation.strategies import craft, random  # noqa: E402,F401  (registration)
