"""``config.rec_reader``: which code reads ``.rec``/``.bin`` data in a patched arcface_torch run.

- ``"auto"`` (the default, also when the key is unset): our reader and verification only when
  mxnet cannot be imported (not installed, or mxnet 1.9.1 beside numpy >= 1.24); otherwise
  upstream's path stays, untouched.
- ``"craft"``: always ours.  ``"mxnet"``: always upstream's (an error if mxnet cannot be imported).
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Optional

from craft_plugin.errors import ConfigError

CHOICES = ("auto", "craft", "mxnet")


def mxnet_problem() -> Optional[str]:
    """Why mxnet cannot be imported here, or None when it can."""
    try:
        import mxnet  # noqa: F401
    except Exception as exc:  # mxnet 1.9.1 raises AttributeError (np.bool) beside numpy >= 1.24
        return f"{type(exc).__name__}: {exc}"
    return None


class RecReaderFeature:
    """Hooks: ``dataloader_factory``, ``verification_class``."""

    name = "rec_reader"

    @classmethod
    def from_config(cls, cfg: Any) -> Optional["RecReaderFeature"]:
        choice = cfg.get("rec_reader")
        choice = "auto" if choice is None else choice
        if not isinstance(choice, str) or choice not in CHOICES:
            raise ConfigError("rec_reader", choice, f"one of {list(CHOICES)}")
        if choice == "craft":
            return cls()
        problem = mxnet_problem()
        if choice == "mxnet":
            if problem:
                raise ConfigError("rec_reader", choice, f'"auto" or "craft": mxnet cannot be imported ({problem})')
            return None
        if problem is None:
            return None
        logging.info("craft-plugin: mxnet cannot be imported (%s); reading data with craft-plugin's reader", problem)
        return cls()

    def dataloader_factory(self, factory: Callable, cfg: Any) -> Callable:
        from craft_plugin.data.dataloader import get_dataloader

        check_dataset_counts(cfg)
        return functools.partial(get_dataloader, fallback=factory)

    def verification_class(self, callback_class: type, cfg: Any) -> type:
        from craft_plugin.data.verification import CallBackVerification

        return CallBackVerification


def check_dataset_counts(cfg: Any) -> None:
    """Before the loader is built: ``config.num_classes`` must equal the class count of the ``.rec``
    folder's ``property`` file (first field), and ``config.num_image`` the number of image records of
    its index. Otherwise Partial FC silently drops labels >= num_classes, or the lr schedule
    (computed from num_image) ends at the wrong step. ConfigError names both numbers."""
    import os

    from craft_plugin.data.dataloader import is_rec_folder
    from craft_plugin.data.dataset import image_keys, read_property
    from craft_plugin.data.recordio import RecordFile

    root = cfg.get("rec")
    if not isinstance(root, str) or not is_rec_folder(root):
        return
    prop = read_property(root)
    if prop is not None and cfg.get("num_classes") != prop[0]:
        raise ConfigError("num_classes", cfg.get("num_classes"),
                          f"{prop[0]}, the class count in {os.path.join(root, 'property')}")
    records = RecordFile(os.path.join(root, "train.rec"), os.path.join(root, "train.idx"))
    images = len(image_keys(records))
    if cfg.get("num_image") != images:
        raise ConfigError("num_image", cfg.get("num_image"),
                          f"{images}, the number of image records in {os.path.join(root, 'train.idx')}")
