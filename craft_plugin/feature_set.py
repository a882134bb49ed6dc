"""Imports each feature module once so that it registers itself in ``FEATURES`` (one line each)."""
