"""arcface_torch's per-rank checkpoints as one run: read, check, merge the classifier, re-split it.

Each ``checkpoint_gpu_{rank}.pt`` of an M-rank run holds rank r's shard of the Partial FC
classifier, rows ``[class_start, class_start + num_local)`` of the (num_classes, embedding_size)
weight with, as in ``PartialFC_V2`` (arXiv 2203.15565, upstream ``partial_fc_v2.py``),

    num_local   = C // M + (r < C % M)
    class_start = C // M * r + min(r, C % M)

and, in ``state_optimizer``, that shard's optimizer state (SGD ``momentum_buffer``, AdamW
``exp_avg``/``exp_avg_sq``): upstream's ``train_v2.py`` builds the optimizer with two param
groups, the backbone's parameters first and the Partial FC weight last (group 1). Everything else
is replicated by DDP (backbone weights and their optimizer state, lr scheduler, epoch, step, the
plugin's state) except BatchNorm running statistics (``broadcast_buffers=False``): those are
taken from rank 0, which is also where upstream's ``model.pt`` comes from.

:func:`merge_run` reads a run into one checkpoint with the whole classifier in class order and
:func:`split` cuts it for any world size. Checkpoints are read with ``weights_only=True``.
"""
from __future__ import annotations

import functools
import inspect
import logging
import pickle
import re
from struct import error as struct_error
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import torch

from craft_plugin.atomic_save import save_synced, staging_path
from craft_plugin.staged_files import replace_together

CHECKPOINT_PATTERN = re.compile(r"checkpoint_gpu_(\d+)\.pt")
REQUIRED_KEYS = ("epoch", "global_step", "state_dict_backbone", "state_dict_softmax_fc",
                 "state_optimizer", "state_lr_scheduler")
FC_WEIGHT = "weight"    # the class-sharded key of state_dict_softmax_fc
FC_GROUP = 1            # the optimizer param group of the Partial FC weight
# keys a merged checkpoint adds for whoever analyses it
MERGED_KEYS = ("num_classes", "source_world_size")


class CheckpointSetError(ValueError):
    """A run's checkpoints do not form one consistent set; the message says which file and why."""


def checkpoint_name(rank: int) -> str:
    return f"checkpoint_gpu_{rank}.pt"


def class_split(num_classes: int, world_size: int, rank: int) -> Tuple[int, int]:
    """``(class_start, num_local)`` of ``rank``, exactly as ``PartialFC_V2`` splits the classes."""
    num_local = num_classes // world_size + int(rank < num_classes % world_size)
    class_start = num_classes // world_size * rank + min(rank, num_classes % world_size)
    return class_start, num_local


def find_checkpoints(run_dir: Path) -> List[Path]:
    """The run's checkpoint files in rank order; ranks must be 0..M-1 with none missing."""
    if not run_dir.is_dir():
        raise CheckpointSetError(f"{run_dir}: not a folder")
    ranks = {}
    for path in run_dir.iterdir():
        match = CHECKPOINT_PATTERN.fullmatch(path.name)
        if match:
            ranks[int(match.group(1))] = path
    if not ranks:
        raise CheckpointSetError(f"{run_dir}: no checkpoint_gpu_{{rank}}.pt files (train with "
                                 f"config.save_all_states = True to write them)")
    missing = sorted(set(range(max(ranks) + 1)) - set(ranks))
    if missing:
        raise CheckpointSetError(f"{run_dir}: rank(s) {missing} missing: found "
                                 f"{[checkpoint_name(r) for r in sorted(ranks)]}, need ranks 0..{max(ranks)}")
    return [ranks[r] for r in range(len(ranks))]


class UntrustedFileError(ValueError):
    """A torch file's pickle references a global that weights-only loading does not admit (only
    tensors, numbers, strings and plain containers): either the file holds objects whose loading
    would call code, or its pickle is damaged so that a name no longer reads as one torch writes.
    It is refused either way; the message names the file and the global."""


class UnreadableTorchFile(ValueError):
    """A file that is not a torch file, or one whose archive or pickle is damaged; the message
    names the file and what was found."""


ZIP_MAGIC = b"PK\x03\x04"       # torch.save's archive format (torch >= 1.6)
LEGACY_MAGIC = b"\x80"           # a pickle's PROTO opcode: the legacy torch.save format starts so


def supports_mmap() -> bool:
    """Whether this torch's ``torch.load`` takes ``mmap=`` (torch >= 2.1)."""
    return "mmap" in inspect.signature(torch.load).parameters


@functools.lru_cache(maxsize=None)
def _say_no_mmap() -> None:
    logging.warning("craft-plugin: torch %s cannot memory-map checkpoints (torch >= 2.1 can): they are read "
                    "into memory", torch.__version__)


def load_weights(path, mmap: bool = False) -> object:
    """The contents of a torch file (``model.pt``, a checkpoint) through ``torch.load`` with
    ``weights_only=True``: tensors, numbers, strings and containers only. Every file the plugin
    loads goes through here; a pickle referencing any other global (``os.system``,
    ``pathlib.Path.touch``, a class) raises :class:`UntrustedFileError` before anything runs; a
    file that is no torch file, or a damaged one, :class:`UnreadableTorchFile`. ``mmap`` maps the
    tensors lazily where torch can (>= 2.1); an older torch reads them into memory, saying so."""
    options = {}
    if mmap and supports_mmap():
        options["mmap"] = True
    elif mmap:
        _say_no_mmap()  # once per process
    with open(path, "rb") as handle:
        start = handle.read(len(ZIP_MAGIC))
    if not (start.startswith(ZIP_MAGIC) or start.startswith(LEGACY_MAGIC)):
        raise UnreadableTorchFile(f"{path}: not a readable torch file: it starts with {start!r}, neither a zip archive "
                                  f"(torch.save) nor a legacy torch pickle")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, **options)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found:
            raise UntrustedFileError(
                f"{path}: refused: its pickle references {found.group(1)[:80]}, which weights-only loading does not "
                f"admit (tensors, numbers, strings and plain containers only): the file holds other objects, or "
                f"its pickle is damaged") from exc
        reason = re.search(r"WeightsUnpickler error: ([^\n]+)", str(exc))
        raise UnreadableTorchFile(f"{path}: not a readable torch file: its pickle is damaged "
                                  f"({reason.group(1) if reason else type(exc).__name__})") from exc
    except (RuntimeError, EOFError, UnicodeDecodeError, KeyError, ValueError, IndexError, TypeError,
            OverflowError, AttributeError, struct_error) as exc:  # torch's reader raises these on damage
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "the file ends early"
        raise UnreadableTorchFile(f"{path}: not a readable torch file: damaged ({type(exc).__name__}: {first})") from exc


def load_checkpoint(path: Path, mmap: bool = False) -> dict:
    """One upstream checkpoint, tensors only (:func:`load_weights`); ``mmap`` reads lazily."""
    try:
        checkpoint = load_weights(path, mmap=mmap)
    except UntrustedFileError:
        raise
    except Exception as exc:  # a truncated or foreign file: say which, keep the reason
        raise CheckpointSetError(f"{path}: not a readable torch checkpoint ({exc})") from exc
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in REQUIRED_KEYS):
        have = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointSetError(f"{path}: not an arcface_torch checkpoint: need keys {list(REQUIRED_KEYS)}, "
                                 f"found {have}")
    return checkpoint


def fc_param_id(checkpoint: dict, path: Path) -> int:
    """The optimizer's id of the Partial FC weight: the only parameter of param group 1."""
    groups = checkpoint["state_optimizer"].get("param_groups", [])
    if len(groups) != FC_GROUP + 1 or len(groups[FC_GROUP]["params"]) != 1:
        raise CheckpointSetError(
            f"{path}: state_optimizer has {len(groups)} param groups with "
            f"{[len(g['params']) for g in groups]} parameters; expected upstream's two groups "
            f"(backbone, then the Partial FC weight alone)")
    return groups[FC_GROUP]["params"][0]


def per_class_keys(opt_state: dict, weight: torch.Tensor) -> List[str]:
    """Optimizer-state entries shaped like the classifier are per class (``momentum_buffer``,
    ``exp_avg``, ``exp_avg_sq``); the rest (AdamW's ``step``) are shared."""
    return sorted(k for k, v in opt_state.items() if torch.is_tensor(v) and v.shape == weight.shape)


def fc_optimizer_state(checkpoint: dict) -> dict:
    """The optimizer state of the Partial FC weight (empty before the first optimizer step)."""
    optimizer = checkpoint["state_optimizer"]
    return optimizer["state"].get(optimizer["param_groups"][FC_GROUP]["params"][0], {})


def _same(a: object, b: object) -> bool:
    if torch.is_tensor(a) and torch.is_tensor(b):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


class _Shards:
    """The class-sharded tensors of one run, gathered rank by rank and checked as they come."""

    def __init__(self, first: dict, first_path: Path):
        self.first, self.first_path = first, first_path
        self.fc_id = fc_param_id(first, first_path)
        self.weights: List[torch.Tensor] = []
        self.opt_tensors: Dict[str, List[torch.Tensor]] = {}

    def add(self, rank: int, checkpoint: dict, path: Path) -> None:
        for key in ("epoch", "global_step"):
            if checkpoint[key] != self.first[key]:
                raise CheckpointSetError(f"{path}: {key} = {checkpoint[key]} but {self.first_path.name} has "
                                         f"{self.first[key]}: the files come from different saves")
        last = checkpoint["state_lr_scheduler"].get("last_epoch")
        if last != self.first["state_lr_scheduler"].get("last_epoch"):
            raise CheckpointSetError(f"{path}: lr scheduler at step {last} but {self.first_path.name} at "
                                     f"{self.first['state_lr_scheduler'].get('last_epoch')}")
        fc = checkpoint["state_dict_softmax_fc"]
        weight = fc.get(FC_WEIGHT)
        if not torch.is_tensor(weight) or weight.dim() != 2:
            raise CheckpointSetError(f"{path}: state_dict_softmax_fc has no 2-D '{FC_WEIGHT}' (keys {sorted(fc)})")
        first_weight = self.first["state_dict_softmax_fc"][FC_WEIGHT]
        if weight.size(1) != first_weight.size(1) or weight.dtype != first_weight.dtype:
            raise CheckpointSetError(f"{path}: classifier shard {tuple(weight.shape)} {weight.dtype} does not fit "
                                     f"{self.first_path.name}'s {tuple(first_weight.shape)} {first_weight.dtype}")
        for key, value in fc.items():
            if key != FC_WEIGHT and not _same(value, self.first["state_dict_softmax_fc"][key]):
                raise CheckpointSetError(f"{path}: state_dict_softmax_fc['{key}'] differs from rank 0's; only "
                                         f"'{FC_WEIGHT}' may differ between ranks")
        fc_param_id(checkpoint, path)
        opt_state = fc_optimizer_state(checkpoint)
        first_state = fc_optimizer_state(self.first)
        keys = per_class_keys(opt_state, weight)
        if opt_state.keys() != first_state.keys() or (rank > 0 and keys != sorted(self.opt_tensors)):
            raise CheckpointSetError(f"{path}: Partial FC optimizer state has {sorted(opt_state)} "
                                     f"({keys} per class) but rank 0's has {sorted(first_state)}")
        for key in set(opt_state) - set(keys):
            if not _same(opt_state[key], first_state[key]):
                raise CheckpointSetError(f"{path}: Partial FC optimizer state '{key}' differs from rank 0's")
        self.weights.append(weight)
        for key in keys:
            self.opt_tensors.setdefault(key, []).append(opt_state[key])

    def concatenate(self, progress: Callable[[Iterable], Iterable]) -> Dict[str, torch.Tensor]:
        """The whole classifier (key ``FC_WEIGHT``) and per-class optimizer state, in class order.
        Copied rank by rank into preallocated tensors, each rank's shards released once copied, so
        that a memory-mapped file's pages can go before the next is read."""
        parts = {FC_WEIGHT: self.weights, **self.opt_tensors}
        rows = [w.size(0) for w in self.weights]
        whole = {key: torch.empty((sum(rows),) + tuple(shards[0].shape[1:]), dtype=shards[0].dtype)
                 for key, shards in parts.items()}
        start = 0
        for rank in progress(range(len(rows))):
            count = rows[rank]
            for key, shards in parts.items():
                whole[key][start:start + count] = shards[rank]
                shards[rank] = None
            start += count
        return whole

    def check_split(self, paths: List[Path]) -> int:
        """The number of classes, after checking each shard has the rows upstream gives that rank."""
        world_size = len(self.weights)
        num_classes = sum(w.size(0) for w in self.weights)
        for rank, (weight, path) in enumerate(zip(self.weights, paths)):
            expected = class_split(num_classes, world_size, rank)[1]
            if weight.size(0) != expected:
                raise CheckpointSetError(
                    f"{path}: classifier shard has {weight.size(0)} rows, but {world_size} ranks of "
                    f"{num_classes} classes give rank {rank} {expected} (shard rows "
                    f"{[w.size(0) for w in self.weights]} do not add up to PartialFC_V2's split)")
        return num_classes


def merge_run(run_dir: Path, progress: Optional[Callable[[Iterable], Iterable]] = None,
              num_classes: Optional[int] = None) -> dict:
    """One checkpoint holding the run's whole classifier and its optimizer state in class order.

    Everything that is not class-sharded comes from rank 0 (BatchNorm running statistics
    included). Raises :class:`CheckpointSetError` for an inconsistent set. The files do not
    record the class count: without ``num_classes`` a set missing its last rank(s) can still
    form a valid split of fewer classes, so give it (``config.num_classes``) to catch that.
    """
    paths = find_checkpoints(Path(run_dir))
    first = load_checkpoint(paths[0])
    shards = _Shards(first, paths[0])
    for rank, path in enumerate(paths):
        # ranks > 0 are memory-mapped: only their classifier shard is read, in concatenate()
        shards.add(rank, first if rank == 0 else load_checkpoint(path, mmap=True), path)
    total = shards.check_split(paths)
    if num_classes is not None and total != num_classes:
        raise CheckpointSetError(f"{run_dir}: the {len(paths)} shards hold {total} classes, not num_classes = "
                                 f"{num_classes}: a rank is missing or the files come from another run")
    whole = shards.concatenate(progress or (lambda ranks: ranks))
    merged = dict(first)
    merged["state_dict_softmax_fc"] = dict(first["state_dict_softmax_fc"])
    merged["state_dict_softmax_fc"][FC_WEIGHT] = whole.pop(FC_WEIGHT)
    optimizer = dict(first["state_optimizer"])
    optimizer["state"] = dict(optimizer["state"])
    if whole:
        optimizer["state"][shards.fc_id] = {**optimizer["state"][shards.fc_id], **whole}
    merged["state_optimizer"] = optimizer
    merged["num_classes"] = total
    merged["source_world_size"] = len(paths)
    return merged


def split(merged: dict, world_size: int) -> Iterator[dict]:
    """``world_size`` checkpoints cut from a merged one as ``PartialFC_V2`` splits classes for
    that world size, one at a time (saved one by one, at most one rank's copy is held). Every shard
    is a copy: a saved view would carry the whole tensor."""
    num_classes = merged["num_classes"]
    fc_id = merged["state_optimizer"]["param_groups"][FC_GROUP]["params"][0]
    fc_state = fc_optimizer_state(merged)
    weight = merged["state_dict_softmax_fc"][FC_WEIGHT]
    per_class = per_class_keys(fc_state, weight)
    for rank in range(world_size):
        start, count = class_split(num_classes, world_size, rank)
        checkpoint = {k: v for k, v in merged.items() if k not in MERGED_KEYS}
        checkpoint["state_dict_softmax_fc"] = dict(merged["state_dict_softmax_fc"])
        checkpoint["state_dict_softmax_fc"][FC_WEIGHT] = weight[start:start + count].clone()
        optimizer = dict(merged["state_optimizer"])
        optimizer["state"] = dict(optimizer["state"])
        if fc_state:
            optimizer["state"][fc_id] = {k: (v[start:start + count].clone() if k in per_class else v)
                                         for k, v in fc_state.items()}
        checkpoint["state_optimizer"] = optimizer
        yield checkpoint


def atomic_save_all(items: Iterable[Tuple[object, Path]],
                    progress: Optional[Callable[[Iterable], Iterable]] = None) -> None:
    """``torch.save`` each object to a temporary file beside its path, flushed and fsynced; only
    when all are written are they moved into place (a failure leaves no target touched)."""
    with replace_together() as staged:
        for obj, path in progress(items) if progress else items:
            path = Path(path)
            tmp = Path(staging_path(path))
            staged.append((tmp, path))
            save_synced(obj, tmp)
