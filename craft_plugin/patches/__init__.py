"""The unified diffs that `craft-plugin patch` applies to an arcface_torch checkout."""
