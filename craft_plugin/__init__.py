"""craft-plugin: a plugin for insightface's ``recognition/arcface_torch`` training pipeline.

It brings CRAFT first-layer filter re-activation (``config.reactivation``), SphereFace-R and
ElasticFace margin losses that work through Partial FC (``config.margin_loss``), named presets
(``config.preset``) and an mxnet-free reader for ``.rec``/``.idx``/``.bin`` data
(``config.rec_reader``). The patched ``train_v2.py`` reaches it through the hooks in
:mod:`craft_plugin.plugin_hooks`; :mod:`craft_plugin.plugin` is the entry point.
"""

__version__ = "0.1.0"
