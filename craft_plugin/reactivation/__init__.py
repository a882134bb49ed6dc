"""CRAFT (Bhatta, Mery, Wu, Bowyer; arXiv 2312.00072, FG 2025): contextual re-activation of
inactive first-layer filters, switched on by ``config.reactivation``. Every threshold, schedule
and re-initialisation rule here is our reading of the paper (docs/craft.md)."""
