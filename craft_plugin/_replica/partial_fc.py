"""A device-agnostic replica of arcface_torch's ``PartialFC_V2`` (arXiv 2203.15565).

Same constructor arguments, attribute names, ``sample()`` and ``state_dict`` keys as upstream;
classes are sharded by rank (rank r owns ``[class_start, class_start + num_local)``), embeddings
and labels are all-gathered, labels of other ranks' classes become -1, ``sample_rate < 1`` keeps
every positive centre plus random negatives and remaps labels into the sampled index, and the
softmax cross-entropy runs across shards. It uses the tensors' device instead of ``.cuda()``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.nn.functional import linear, normalize

from craft_plugin.distributed import DistCrossEntropy, gather_shard_batch, rank_and_world_size
from craft_plugin.errors import ConfigError


class PartialFC_V2(torch.nn.Module):
    _version = 2

    def __init__(self, margin_loss: Callable, embedding_size: int, num_classes: int,
                 sample_rate: float = 1.0, fp16: bool = False):
        super().__init__()
        if not callable(margin_loss):
            raise ConfigError("margin_loss", margin_loss, "a callable margin_softmax(logits, labels)")
        self.rank, self.world_size = rank_and_world_size()
        self.dist_cross_entropy = DistCrossEntropy()
        self.embedding_size = embedding_size
        self.sample_rate: float = sample_rate
        self.fp16 = fp16
        self.num_local: int = num_classes // self.world_size + int(self.rank < num_classes % self.world_size)
        self.class_start: int = num_classes // self.world_size * self.rank + min(
            self.rank, num_classes % self.world_size)
        self.num_sample: int = int(self.sample_rate * self.num_local)
        self.last_batch_size: int = 0
        self.is_updated: bool = True
        self.init_weight_update: bool = True
        self.weight = torch.nn.Parameter(torch.normal(0, 0.01, (self.num_local, embedding_size)))
        self.margin_softmax = margin_loss

    def sample(self, labels: torch.Tensor, index_positive: torch.Tensor) -> torch.Tensor:
        """Keep all positive centres plus random negatives; remap ``labels`` in place."""
        with torch.no_grad():
            positive = torch.unique(labels[index_positive], sorted=True)
            if self.num_sample - positive.size(0) >= 0:
                perm = torch.rand(size=[self.num_local], device=self.weight.device)
                perm[positive] = 2.0
                index = torch.topk(perm, k=self.num_sample)[1].sort()[0]
            else:
                index = positive
            self.weight_index = index
            labels[index_positive] = torch.searchsorted(index, labels[index_positive])
        return self.weight[self.weight_index]

    def forward(self, local_embeddings: torch.Tensor, local_labels: torch.Tensor) -> torch.Tensor:
        embeddings, labels, weight = gather_shard_batch(self, local_embeddings, local_labels)
        with torch.autocast(embeddings.device.type, enabled=self.fp16,
                            dtype=torch.float16 if embeddings.device.type == "cuda" else torch.bfloat16):
            logits = linear(normalize(embeddings), normalize(weight))
        if self.fp16:
            logits = logits.float()
        logits = logits.clamp(-1, 1)
        logits = self.margin_softmax(logits, labels)
        return self.dist_cross_entropy(logits, labels)
