"""``get_dataloader`` with upstream's signature: synthetic identities or a ``.rec`` folder.

``root_dir`` ``"synthetic"`` / ``"synthetic:<ids>x<per_id>"`` gives the deterministic identities of
:mod:`craft_plugin.mini.synthetic` (32x32); any other value is a folder with ``train.rec``,
``train.idx`` read by craft_plugin's reader. Sampling is upstream's: a shuffled
``DistributedSampler`` seeded with ``seed``, ``drop_last=True``, per-worker seeds
``num_workers * rank + worker_id + seed``.
"""
from __future__ import annotations

import functools
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from craft_plugin.data.transforms import random_flip, to_training_tensor
from craft_plugin.distributed import rank_and_world_size
from craft_plugin.mini.synthetic import parse_synthetic, synthetic_image


class SyntheticFaceDataset(Dataset):
    def __init__(self, ids: int, per_id: int, seed: int = 0, size: int = 32):
        self.ids, self.per_id, self.seed, self.size = ids, per_id, seed, size

    def __len__(self) -> int:
        return self.ids * self.per_id

    def __getitem__(self, index: int):
        identity, sample = divmod(index, self.per_id)
        image = synthetic_image(self.seed, identity, sample, self.size)
        return to_training_tensor(image, random_flip()), torch.tensor(identity, dtype=torch.long)


def worker_init_fn(worker_id: int, num_workers: int, rank: int, seed: int) -> None:
    worker_seed = num_workers * rank + worker_id + seed
    np.random.seed(worker_seed)
    random.seed(worker_seed)
    torch.manual_seed(worker_seed)


def build_dataset(root_dir: str, local_rank: int) -> Dataset:
    if root_dir.startswith("synthetic"):
        return SyntheticFaceDataset(*parse_synthetic(root_dir))
    from craft_plugin.data.dataset import RecFaceDataset

    return RecFaceDataset(root_dir, local_rank)


def get_dataloader(root_dir: str, local_rank: int, batch_size: int, dali: bool = False,
                   dali_aug: bool = False, seed: int = 2048, num_workers: int = 2) -> DataLoader:
    if dali:
        raise ValueError("config.dali = True needs NVIDIA DALI on GPUs; the mini pipeline has none")
    rank, world_size = rank_and_world_size()
    dataset = build_dataset(root_dir, local_rank)
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    init_fn = functools.partial(worker_init_fn, num_workers=num_workers, rank=rank, seed=seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=True, worker_init_fn=init_fn if num_workers else None)
