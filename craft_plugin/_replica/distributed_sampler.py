"""Stand-in for arcface_torch's ``utils/utils_distributed_sampler.py``: seeds and the sampler.

``DistributedSampler``: every rank uses rank 0's seed (broadcast), shuffles with
``randperm(n, generator seeded seed + epoch)``, pads the list by repeating it to a multiple of the
world size and takes every ``world_size``-th index from its rank. DataLoader worker k of rank r is
seeded ``num_workers * r + k + seed`` (numpy, random, torch).
"""
from __future__ import annotations

import math
import random
from typing import Iterator, Tuple

import numpy as np
import torch
from torch import distributed
from torch.utils.data import Dataset
from torch.utils.data import DistributedSampler as TorchDistributedSampler


def setup_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def get_dist_info() -> Tuple[int, int]:
    if distributed.is_available() and distributed.is_initialized():
        return distributed.get_rank(), distributed.get_world_size()
    return 0, 1


def worker_init_fn(worker_id: int, num_workers: int, rank: int, seed: int) -> None:
    worker_seed = num_workers * rank + worker_id + seed
    np.random.seed(worker_seed)
    random.seed(worker_seed)
    torch.manual_seed(worker_seed)


def sync_random_seed(seed: int) -> int:
    """Rank 0's ``seed`` on every rank."""
    rank, world_size = get_dist_info()
    if world_size == 1:
        return seed
    value = torch.tensor(seed if rank == 0 else 0, dtype=torch.int32)
    distributed.broadcast(value, src=0)
    return int(value.item())


class DistributedSampler(TorchDistributedSampler):
    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool = True, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle)
        self.seed = sync_random_seed(seed)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.epoch + self.seed)
            indices = torch.randperm(len(self.dataset), generator=generator).tolist()
        else:
            indices = list(range(len(self.dataset)))
        indices = (indices * math.ceil(self.total_size / len(indices)))[:self.total_size]
        return iter(indices[self.rank:self.total_size:self.num_replicas])
