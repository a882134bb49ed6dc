"""A CPU replica of arcface_torch's training pipeline, faithful to its interfaces.

``train.train(cfg)`` mirrors upstream ``train_v2.py`` ``main()`` step by step and makes exactly the
hook calls that craft-plugin's patch adds there. Our tests and ``craft-plugin demo`` train through
it; it runs in one process or in several gloo processes (:mod:`craft_plugin._replica.launch`).
"""
