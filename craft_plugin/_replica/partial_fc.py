"""Stand-in for arcface_torch's ``partial_fc_v2.py`` (Partial FC, arXiv 2203.15565), on any device.

Written from upstream's behaviour, independently of craft-plugin's own modules, so that tests of
the plugin against it compare two implementations. What it keeps of upstream, on purpose:

- ``PartialFC_V2``: the same constructor, attributes (``rank``, ``world_size``, ``class_start``,
  ``num_local``, ``num_sample``, ``sample_rate``, ``last_batch_size``, ``weight``,
  ``margin_softmax``, ``dist_cross_entropy``, ``fp16``), ``sample()`` and ``state_dict`` keys.
  Rank r owns classes ``[class_start, class_start + num_local)``; embeddings are all-gathered with
  gradient, labels without; labels of other ranks' classes become -1, the rest shard-local.
- ``DistCrossEntropyFunc`` works IN PLACE on the margin loss's output, as upstream's does:
  z <- exp(z - max_global), z <- z / sum_global, loss = -mean_i log max(z_{i,y_i}, 1e-30); the
  probabilities (that same tensor) are saved for backward, which turns them into
  (softmax - onehot) / B in place (so the graph can be run backward once). A margin loss whose
  autograd graph saved its own output therefore fails with "modified by an inplace operation"
  here exactly as under upstream.
- The all-gather's backward sums every rank's gradient for this rank's rows and multiplies it by
  the world size (every rank's loss is the global-batch mean; DDP averages over ranks).

Differences: the tensors' device instead of ``.cuda()``; ``torch.autocast``
on that device for ``fp16``; no process group means one rank (upstream asserts one exists); the
target probabilities are kept in the logits' dtype (upstream: float32, the same for float32 logits;
float64 tests keep their precision).
"""
from __future__ import annotations

from typing import Callable, List, Tuple

import torch
from torch import distributed
from torch.nn.functional import linear, normalize

from craft_plugin._replica.distributed_sampler import get_dist_info


def all_reduce(tensor: torch.Tensor, op: distributed.ReduceOp) -> None:
    if get_dist_info()[1] > 1:
        distributed.all_reduce(tensor, op)


class AllGatherFunc(torch.autograd.Function):
    """Forward: every rank's ``tensor``, in rank order. Backward: for this rank's rows, the sum over
    ranks of their gradients, times the world size."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        world_size = get_dist_info()[1]
        if world_size == 1:
            return (tensor.clone(),)
        gathered: List[torch.Tensor] = [torch.empty_like(tensor) for _ in range(world_size)]
        distributed.all_gather(gathered, tensor.contiguous())
        return tuple(gathered)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        rank, world_size = get_dist_info()
        if world_size == 1:
            return grads[0]
        mine = grads[rank].contiguous()
        pending = [distributed.reduce(mine if r == rank else grads[r].contiguous(), r,
                                      distributed.ReduceOp.SUM, async_op=True)
                   for r in range(world_size)]
        for work in pending:
            work.wait()
        return mine * world_size


class DistCrossEntropyFunc(torch.autograd.Function):
    """Softmax cross-entropy over class shards, computed in place in ``logits`` (see the module)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        batch_size = logits.size(0)
        row_max = logits.max(dim=1, keepdim=True)[0]
        all_reduce(row_max, distributed.ReduceOp.MAX)
        logits.sub_(row_max)
        logits.exp_()
        row_sum = logits.sum(dim=1, keepdim=True)
        all_reduce(row_sum, distributed.ReduceOp.SUM)
        logits.div_(row_sum)
        rows = torch.where(labels != -1)[0]
        target = torch.zeros(batch_size, 1, device=logits.device, dtype=logits.dtype)
        target[rows] = logits[rows].gather(1, labels[rows])
        all_reduce(target, distributed.ReduceOp.SUM)
        ctx.save_for_backward(rows, logits, labels)
        return target.clamp_min_(1e-30).log_().mean() * -1

    @staticmethod
    def backward(ctx, loss_gradient: torch.Tensor):
        rows, prob, labels = ctx.saved_tensors
        one_hot = torch.zeros(rows.size(0), prob.size(1), device=prob.device, dtype=prob.dtype)
        one_hot.scatter_(1, labels[rows], 1)
        prob[rows] -= one_hot
        prob.div_(prob.size(0))
        # a tensor factor, where upstream calls loss_gradient.item(): the same product, no sync
        return prob * loss_gradient, None


class DistCrossEntropy(torch.nn.Module):
    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return DistCrossEntropyFunc.apply(logits, labels)


class PartialFC_V2(torch.nn.Module):
    """Margin-softmax classifier with its class centres sharded over ranks (upstream's semantics).

    With ``sample_rate < 1`` each step uses every positive centre of the global batch plus random
    negatives, ``num_sample`` in all, and remaps the labels into that subset.
    """

    _version = 2

    def __init__(self, margin_loss: Callable, embedding_size: int, num_classes: int,
                 sample_rate: float = 1.0, fp16: bool = False):
        super().__init__()
        if not callable(margin_loss):
            raise TypeError(f"PartialFC_V2: margin_loss must be callable, got {type(margin_loss).__name__}")
        self.rank, self.world_size = get_dist_info()
        self.dist_cross_entropy = DistCrossEntropy()
        self.embedding_size = embedding_size
        self.sample_rate: float = sample_rate
        self.fp16 = fp16
        per_rank, extra = divmod(num_classes, self.world_size)
        self.num_local: int = per_rank + int(self.rank < extra)
        self.class_start: int = per_rank * self.rank + min(self.rank, extra)
        self.num_sample: int = int(self.sample_rate * self.num_local)
        self.last_batch_size: int = 0
        self.is_updated: bool = True
        self.init_weight_update: bool = True
        self.weight = torch.nn.Parameter(torch.normal(0, 0.01, (self.num_local, embedding_size)))
        self.margin_softmax = margin_loss

    def sample(self, labels: torch.Tensor, index_positive: torch.Tensor) -> torch.Tensor:
        """The centres used this step; rewrites ``labels[index_positive]`` to indices into them."""
        with torch.no_grad():
            positive = torch.unique(labels[index_positive], sorted=True)
            if self.num_sample >= positive.size(0):
                score = torch.rand(size=[self.num_local], device=self.weight.device)
                score[positive] = 2.0
                index = torch.topk(score, k=self.num_sample)[1].sort()[0]
            else:
                index = positive
            self.weight_index = index
            labels[index_positive] = torch.searchsorted(index, labels[index_positive])
        return self.weight[self.weight_index]

    def forward(self, local_embeddings: torch.Tensor, local_labels: torch.Tensor) -> torch.Tensor:
        local_labels.squeeze_()
        local_labels = local_labels.long()
        batch_size = local_embeddings.size(0)
        if self.last_batch_size == 0:
            self.last_batch_size = batch_size
        assert self.last_batch_size == batch_size, (
            f"last batch size do not equal current batch size: {self.last_batch_size} vs {batch_size}")

        embeddings = torch.cat(AllGatherFunc.apply(local_embeddings))
        gathered_labels = [torch.empty_like(local_labels) for _ in range(self.world_size)]
        if self.world_size > 1:
            distributed.all_gather(gathered_labels, local_labels.contiguous())
        else:
            gathered_labels = [local_labels.clone()]
        labels = torch.cat(gathered_labels).view(-1, 1)
        index_positive = (self.class_start <= labels) & (labels < self.class_start + self.num_local)
        labels[~index_positive] = -1
        labels[index_positive] -= self.class_start

        weight = self.sample(labels, index_positive) if self.sample_rate < 1 else self.weight
        device = embeddings.device.type
        with torch.autocast(device, enabled=self.fp16, dtype=torch.float16 if device == "cuda" else torch.bfloat16):
            logits = linear(normalize(embeddings), normalize(weight))
        if self.fp16:
            logits = logits.float()
        logits = logits.clamp(-1, 1)
        logits = self.margin_softmax(logits, labels)
        return self.dist_cross_entropy(logits, labels)
