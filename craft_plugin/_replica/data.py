"""``get_dataloader`` with upstream's signature: synthetic identities or a ``.rec`` folder.

``root_dir`` ``"synthetic"`` / ``"synthetic:<ids>x<per_id>"`` gives the deterministic identities of
:mod:`craft_plugin._replica.synthetic` (32x32); any other value is a folder with ``train.rec``,
``train.idx`` read by craft_plugin's reader. Sampling is upstream's (:func:`craft_plugin.data.dataloader.make_loader`).
"""
from __future__ import annotations

from torch.utils.data import DataLoader, Dataset

from craft_plugin.data.dataloader import make_loader
from craft_plugin.data.dataset import RecFaceDataset
from craft_plugin.data.transforms import CoinFlips, label_tensor, to_training_tensor
from craft_plugin._replica.synthetic import parse_synthetic, synthetic_image


class SyntheticFaceDataset(Dataset):
    def __init__(self, ids: int, per_id: int, seed: int = 0, size: int = 32):
        self.ids, self.per_id, self.seed, self.size = ids, per_id, seed, size
        self.flips = CoinFlips()

    def __len__(self) -> int:
        return self.ids * self.per_id

    def __getitem__(self, index: int):
        identity, sample = divmod(index, self.per_id)
        image = synthetic_image(self.seed, identity, sample, self.size)
        return to_training_tensor(image, self.flips()), label_tensor(identity)


def build_dataset(root_dir: str, local_rank: int) -> Dataset:
    if root_dir.startswith("synthetic"):
        return SyntheticFaceDataset(*parse_synthetic(root_dir))
    return RecFaceDataset(root_dir, local_rank)


def get_dataloader(root_dir: str, local_rank: int, batch_size: int, dali: bool = False,
                   dali_aug: bool = False, seed: int = 2048, num_workers: int = 2) -> DataLoader:
    if dali:
        raise ValueError("config.dali = True needs NVIDIA DALI on GPUs; the mini pipeline has none")
    return make_loader(build_dataset(root_dir, local_rank), local_rank, batch_size, seed, num_workers)
