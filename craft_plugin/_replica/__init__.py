"""A CPU stand-in for arcface_torch's training pipeline, for craft-plugin's tests and demo; not API.

Each module stands for an upstream file with the same interfaces and semantics (``train.py`` for
``train_v2.py``, ``partial_fc.py``, ``losses.py``, ``data.py`` for ``dataset.py``,
``distributed_sampler.py``, ``verification.py`` for the verification callback, ``lr_scheduler.py``,
``backbone.py``), written independently of the plugin's own modules so that a test of the plugin
against it compares two implementations. ``train.train(cfg)`` makes exactly the hook calls that
craft-plugin's patch adds to ``train_v2.py``; it runs in one process or in several gloo processes
(:mod:`craft_plugin._replica.launch`). Users train with their real arcface_torch checkout.
"""
