"""arcface_torch plugin hooks, API version 1 (added by craft-plugin's patch).

Plugins are modules registered in the ``arcface_torch.plugins`` entry-point group. ``train_v2.py``
calls ``plugin_filter(name, value, **kw)``, where a plugin may return a replacement for ``value``,
and ``plugin_hook(name, **kw)`` for events. With no plugin installed both do nothing.

A registered plugin that cannot be imported stops training before it starts (ImportError naming the
plugin and the exception): its config keys would otherwise be ignored silently. With the
environment variable ARCFACE_TORCH_PLUGINS_OPTIONAL=1 such a plugin is skipped with a warning.
"""
import importlib.metadata
import logging
import os

HOOK_API = 1
OPTIONAL_ENV = "ARCFACE_TORCH_PLUGINS_OPTIONAL"


def load_plugins(group="arcface_torch.plugins"):
    eps = importlib.metadata.entry_points()
    plugins = []
    for ep in eps.select(group=group) if hasattr(eps, "select") else eps.get(group, ()):
        try:
            plugins.append(ep.load())
        except Exception as exc:
            why = f"arcface_torch plugin {ep.name!r} ({ep.value}) cannot be imported: {type(exc).__name__}: {exc}"
            if os.environ.get(OPTIONAL_ENV) != "1":
                raise ImportError(f"{why}; fix or uninstall it, or set {OPTIONAL_ENV}=1 to train without it") from exc
            logging.warning("%s; training without it (%s=1)", why, OPTIONAL_ENV)
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
