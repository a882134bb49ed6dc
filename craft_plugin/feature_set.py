"""Imports each feature module once so that it registers itself in ``FEATURES`` (one line each)."""
import craft_plugin.reactivation.feature  # noqa: F401
import craft_plugin.data.feature  # noqa: F401
import craft_plugin.losses.feature  # noqa: F401
