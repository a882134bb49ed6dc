"""Crash-safe ``torch.save``: the file at ``path`` is always either the previous complete file or the
new complete one, never a partial write.

The object is written to a temporary file in the same folder (same filesystem, so the rename is
atomic), flushed and fsynced, then moved over ``path`` with ``os.replace``; the folder is fsynced so
the rename itself survives a power cut. A process killed mid-save (``kill -9``, out of memory, a
preempted node) leaves the previous checkpoint intact and at most a stray ``.<name>.partial`` file,
which the next save by the same rank replaces or which can be deleted.

The compatibility patch adds this file to the arcface_torch checkout (``atomic_save.py``, copied
verbatim; it needs only ``os`` and ``torch``) and routes ``train_v2.py``'s checkpoint and ``model.pt``
saves through it; the replica's ``train.py`` imports it from here.
"""
import os

import torch


def staging_path(path) -> str:
    """The temporary file beside ``path`` that a save writes before renaming it over ``path``."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(folder, f".{name}.partial")


def save_synced(obj, path) -> None:
    """``torch.save`` to ``path``, flushed and fsynced before returning."""
    with open(path, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_save(obj, path) -> None:
    """``torch.save(obj, path)`` through a synced temporary file and an atomic rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = staging_path(path)
    try:
        save_synced(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if hasattr(os, "O_DIRECTORY"):  # POSIX: make the rename durable
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
