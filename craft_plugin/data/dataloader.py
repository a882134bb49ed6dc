"""Data loaders with arcface_torch's sampling, for our ``.rec`` reader.

``make_loader`` is upstream's recipe: a shuffled ``DistributedSampler`` seeded with ``seed``,
``drop_last=True``, per-worker seeds ``num_workers * rank + worker_id + seed``. Batches are moved
to ``cuda:local_rank`` when CUDA is available, as upstream's ``DataLoaderX`` does. There is no
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

from craft_plugin.distributed import rank_and_world_size


def worker_init_fn(worker_id: int, num_workers: int, rank: int, seed: int) -> None:
    worker_seed = num_workers * rank + worker_id + seed
    np.random.seed(worker_seed)
    random.seed(worker_seed)
    torch.manual_seed(worker_seed)


class DeviceLoader(DataLoader):
    """A DataLoader whose batches land on ``device`` (left on the CPU when it is ``None``)."""

    def __init__(self, device: Optional[torch.device], **kwargs):
        super().__init__(**kwargs)
        self.device = device

    def __iter__(self) -> Iterator:
        for batch in super().__iter__():
            yield batch if self.device is None else [t.to(self.device, non_blocking=True) for t in batch]


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
    if is_rec_folder(root_dir) and not dali:
        from craft_plugin.data.dataset import RecFaceDataset

        return make_loader(RecFaceDataset(root_dir, local_rank), local_rank, batch_size, seed, num_workers)
    if fallback is None:
        raise FileNotFoundError(f"config.rec = {root_dir!r} holds no train.rec/train.idx")
    return fallback(root_dir, local_rank, batch_size, dali, dali_aug, seed, num_workers)
