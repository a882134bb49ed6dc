"""arcface_torch plugin hooks, API version 1 (added by craft-plugin's patch).

Plugins are modules registered in the ``arcface_torch.plugins`` entry-point group. ``train_v2.py``
calls ``plugin_filter(name, value, **kw)``, where a plugin may return a replacement for ``value``,
and ``plugin_hook(name, **kw)`` for events. With no plugin installed both do nothing.
"""
import importlib.metadata
import logging

HOOK_API = 1


def load_plugins(group="arcface_torch.plugins"):
    eps = importlib.metadata.entry_points()
    plugins = []
    for ep in eps.select(group=group) if hasattr(eps, "select") else eps.get(group, ()):
        try:
            plugins.append(ep.load())
        except Exception as exc:  # a broken plugin must not stop training: skip it, say why
            logging.warning("arcface_torch plugin %r not loaded: %s", ep.name, exc)
    return plugins


PLUGINS = load_plugins()


def plugin_filter(name, value, plugins=None, **kwargs):
    for plugin in PLUGINS if plugins is None else plugins:
        value = getattr(plugin, name)(value, **kwargs) if hasattr(plugin, name) else value
    return value


def plugin_hook(name, plugins=None, **kwargs):
    for plugin in PLUGINS if plugins is None else plugins:
        if hasattr(plugin, name):
            getattr(plugin, name)(**kwargs)
