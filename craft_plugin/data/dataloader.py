"""Data loaders with arcface_torch's sampling, for our ``.rec`` reader.

``make_loader`` is upstream's recipe: a shuffled ``DistributedSampler`` seeded with ``seed``,
``drop_last=True``, per-worker seeds ``num_workers * rank + worker_id + seed``. Batches are moved
to ``cuda:local_rank`` when CUDA is available, as upstream's ``DataLoaderX`` does. Images cross
the workers' shared memory, the pinned buffer and the host-to-device copy as uint8 (a quarter of
float32's bytes) and are normalised per batch where they land, as apex's ``data_prefetcher``,
timm's ``PrefetchLoader`` and arcface_torch's own DALI path do; the training loop receives what
upstream's loader gives it, float32 ``(B, 3, H, W)`` in [-1, 1] and int64 labels. There is no
background thread: DataLoader workers already prefetch, and an exception in a worker (a corrupt
record) is re-raised in the training loop with the file and offset in its message.
"""
from __future__ import annotations

import functools
import os
import random
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from craft_plugin.data.transforms import normalise
from craft_plugin.distributed import rank_and_world_size


def worker_init_fn(worker_id: int, num_workers: int, rank: int, seed: int) -> None:
    worker_seed = num_workers * rank + worker_id + seed
    np.random.seed(worker_seed)
    random.seed(worker_seed)
    torch.manual_seed(worker_seed)


class DeviceLoader(DataLoader):
    """A DataLoader whose ``[images, labels]`` batches land on ``device`` (left on the CPU when it
    is ``None``; pinned, then copied without blocking, on CUDA). uint8 images are normalised there,
    after the copy (:func:`~craft_plugin.data.transforms.normalise`); float images (a dataset that
    normalises its own items) pass as they come."""

    def __init__(self, device: Optional[torch.device], **kwargs):
        super().__init__(**kwargs)
        self.device = device

    def __iter__(self) -> Iterator:
        for images, labels in super().__iter__():
            if self.device is not None:
                images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            yield [normalise(images) if images.dtype == torch.uint8 else images, labels]


def make_loader(dataset: Dataset, local_rank: int, batch_size: int, seed: int = 2048,
                num_workers: int = 2) -> DeviceLoader:
    rank, world_size = rank_and_world_size()
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    init_fn = functools.partial(worker_init_fn, num_workers=num_workers, rank=rank, seed=seed)
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else None
    return DeviceLoader(device, dataset=dataset, batch_size=batch_size, sampler=sampler,
                        num_workers=num_workers, pin_memory=device is not None, drop_last=True,
                        worker_init_fn=init_fn if num_workers else None)


def is_rec_folder(root_dir: str) -> bool:
    return os.path.exists(os.path.join(root_dir, "train.rec")) and os.path.exists(os.path.join(root_dir, "train.idx"))


def get_dataloader(root_dir: str, local_rank: int, batch_size: int, dali: bool = False,
                   dali_aug: bool = False, seed: int = 2048, num_workers: int = 2,
                   fallback: Optional[Callable] = None):
    """Upstream's ``get_dataloader`` signature; ``.rec`` folders (without DALI) go through our
    reader, anything else (synthetic, image folders, DALI) to ``fallback``, upstream's function."""
    halves = [name for name in ("train.rec", "train.idx") if os.path.exists(os.path.join(root_dir, name))]
    if len(halves) == 1:  # upstream would take the folder for an image folder and fail far from the cause
        missing = "train.idx" if halves == ["train.rec"] else "train.rec"
        raise FileNotFoundError(f"{os.path.join(root_dir, missing)}: missing beside {halves[0]} (config.rec = "
                                f"{root_dir!r}); a .rec needs its .idx index (and the reverse)")
    if is_rec_folder(root_dir) and not dali:
        from craft_plugin.data.dataset import RecFaceDataset

        return make_loader(RecFaceDataset(root_dir, local_rank), local_rank, batch_size, seed, num_workers)
    if fallback is None:
        raise FileNotFoundError(f"config.rec = {root_dir!r} holds no train.rec/train.idx")
    return fallback(root_dir, local_rank, batch_size, dali, dali_aug, seed, num_workers)
