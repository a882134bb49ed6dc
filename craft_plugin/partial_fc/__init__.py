"""Partial FC classes that replace arcface_torch's ``PartialFC_V2`` through the
``partial_fc_class`` hook (``config.partial_fc``)."""
