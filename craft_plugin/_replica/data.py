"""Stand-in for arcface_torch's ``dataset.py``.

Written independently of craft-plugin's reader. ``get_dataloader`` has upstream's signature:

- ``root_dir`` ``"synthetic"`` or ``"synthetic:<ids>x<per_id>"``: the deterministic identities of
  :mod:`craft_plugin._replica.synthetic` (32x32), through upstream's training transform;
- a folder with ``train.rec``/``train.idx``: ``MXFaceDataset`` through mxnet, as upstream. Where
  mxnet cannot be imported it fails as upstream does; in a run with craft-plugin's hooks the
  ``rec_reader`` feature replaces this loader through the ``dataloader_factory`` filter first.

The training transform is upstream's torchvision chain written out: RandomHorizontalFlip (one
``torch.rand(1)`` per image, flip when < 0.5), ToTensor (HWC uint8 -> CHW float32 / 255) and
Normalize(0.5, 0.5) ((x - 0.5) / 0.5), in float32 and in that order. Sampling is upstream's
(:mod:`craft_plugin._replica.distributed_sampler`), with ``drop_last=True``.
Batches stay on the CPU (upstream's ``DataLoaderX`` moves them to ``cuda:local_rank``).
"""
from __future__ import annotations

import functools
import numbers
import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from craft_plugin._replica.distributed_sampler import DistributedSampler, get_dist_info, worker_init_fn
from craft_plugin._replica.synthetic import parse_synthetic, synthetic_image

NORMALIZE_MEAN = torch.tensor([0.5, 0.5, 0.5]).view(-1, 1, 1)
NORMALIZE_STD = torch.tensor([0.5, 0.5, 0.5]).view(-1, 1, 1)


def training_transform(rgb: np.ndarray) -> torch.Tensor:
    """RGB uint8 HWC -> CHW float32 in [-1, 1], mirrored with probability 1/2 (see the module)."""
    if torch.rand(1) < 0.5:
        rgb = rgb[:, ::-1]
    chw = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).to(torch.float32).div(255)
    return chw.sub_(NORMALIZE_MEAN).div_(NORMALIZE_STD)


class SyntheticFaceDataset(Dataset):
    """``ids`` identities of ``per_id`` images each; index i is sample ``i % per_id`` of identity ``i // per_id``."""

    def __init__(self, ids: int, per_id: int, seed: int = 0, size: int = 32):
        self.ids, self.per_id, self.seed, self.size = ids, per_id, seed, size

    def __len__(self) -> int:
        return self.ids * self.per_id

    def __getitem__(self, index: int):
        identity, sample = divmod(index, self.per_id)
        image = synthetic_image(self.seed, identity, sample, self.size)
        return training_transform(image), torch.tensor(identity, dtype=torch.long)


class MXFaceDataset(Dataset):
    """Upstream's ``.rec`` dataset: records read and decoded by mxnet (``mx.image.imdecode``, RGB)."""

    def __init__(self, root_dir: str, local_rank: int):
        import mxnet as mx  # raises where mxnet cannot be imported, as upstream's dataset.py does

        self.root_dir, self.local_rank = root_dir, local_rank
        self.imgrec = mx.recordio.MXIndexedRecordIO(os.path.join(root_dir, "train.idx"),
                                                    os.path.join(root_dir, "train.rec"), "r")
        header, _ = mx.recordio.unpack(self.imgrec.read_idx(0))
        if header.flag > 0:
            self.imgidx = np.array(range(1, int(header.label[0])))
        else:
            self.imgidx = np.array(list(self.imgrec.keys))

    def __getitem__(self, index: int):
        import mxnet as mx

        header, img = mx.recordio.unpack(self.imgrec.read_idx(self.imgidx[index]))
        label = header.label if isinstance(header.label, numbers.Number) else header.label[0]
        return training_transform(mx.image.imdecode(img).asnumpy()), torch.tensor(int(label), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.imgidx)


def build_dataset(root_dir: str, local_rank: int) -> Dataset:
    if root_dir.startswith("synthetic"):
        return SyntheticFaceDataset(*parse_synthetic(root_dir))
    if os.path.exists(os.path.join(root_dir, "train.rec")) and os.path.exists(os.path.join(root_dir, "train.idx")):
        return MXFaceDataset(root_dir, local_rank)
    raise FileNotFoundError(f"config.rec = {root_dir!r}: the replica reads \"synthetic[:<ids>x<per_id>]\" "
                            f"or a folder with train.rec and train.idx (no image folders)")


def get_dataloader(root_dir: str, local_rank: int, batch_size: int, dali: bool = False,
                   dali_aug: bool = False, seed: int = 2048, num_workers: int = 2) -> DataLoader:
    if dali:
        raise ValueError("config.dali = True needs NVIDIA DALI on GPUs; the replica has none")
    train_set = build_dataset(root_dir, local_rank)
    rank, world_size = get_dist_info()
    sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    init_fn = functools.partial(worker_init_fn, num_workers=num_workers, rank=rank, seed=seed)
    return DataLoader(dataset=train_set, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=True, worker_init_fn=init_fn)
