"""Collective operations for the Partial FC classifier, on any backend (gloo on CPU, NCCL on GPU).

The conventions are those of arcface_torch's Partial FC: each rank holds a shard of the class
centres and embeddings are all-gathered so that every rank scores the global batch against its
shard (the cross-entropy across shards is the Partial FC class's own ``dist_cross_entropy``).
With ``torch.distributed`` not initialised everything degenerates to the single-process operation.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import distributed


def rank_and_world_size() -> Tuple[int, int]:
    """``(rank, world_size)``, or ``(0, 1)`` when torch.distributed is not initialised."""
    if distributed.is_available() and distributed.is_initialized():
        return distributed.get_rank(), distributed.get_world_size()
    return 0, 1


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: concatenation of every rank's tensor. Backward: this rank's rows of the
    gradient summed over ranks, times the world size.

    Every rank's loss is the same global-batch mean, and DDP averages backbone gradients over
    ranks; the world-size factor makes the averaged gradient the gradient of that one loss.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        rank, world_size = rank_and_world_size()
        ctx.rank, ctx.world_size, ctx.rows = rank, world_size, tensor.size(0)
        parts: List[torch.Tensor] = [torch.empty_like(tensor) for _ in range(world_size)]
        distributed.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        distributed.all_reduce(grad, distributed.ReduceOp.SUM)
        start = ctx.rank * ctx.rows
        return grad[start:start + ctx.rows] * ctx.world_size


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Rows of ``tensor`` from all ranks concatenated in rank order, differentiable."""
    if rank_and_world_size()[1] == 1:
        return tensor
    return _AllGatherWithGrad.apply(tensor)


def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Rows of ``tensor`` from all ranks concatenated in rank order (labels, statistics)."""
    world_size = rank_and_world_size()[1]
    if world_size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size)]
    distributed.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def all_reduce_(tensor: torch.Tensor, op: "distributed.ReduceOp" = distributed.ReduceOp.SUM) -> torch.Tensor:
    """In-place all-reduce that is a no-op without a process group."""
    if rank_and_world_size()[1] > 1:
        distributed.all_reduce(tensor, op)
    return tensor


def gather_shard_batch(pfc: torch.nn.Module, local_embeddings: torch.Tensor, local_labels: torch.Tensor):
    """The global batch as a Partial FC shard sees it: ``(embeddings, labels, weight)``.

    ``pfc`` is any module with ``PartialFC_V2``'s attributes (upstream's or our replica):
    embeddings are all-gathered with gradient; labels of classes outside
    ``[class_start, class_start + num_local)`` become -1, the others shard-local; with
    ``sample_rate < 1`` ``pfc.sample`` picks the centres and remaps the labels.
    """
    local_labels.squeeze_()
    local_labels = local_labels.long()
    batch_size = local_embeddings.size(0)
    if pfc.last_batch_size == 0:
        pfc.last_batch_size = batch_size
    if pfc.last_batch_size != batch_size:
        raise ValueError(f"Partial FC needs a constant batch size (drop_last=True): "
                         f"got {batch_size} after {pfc.last_batch_size}")
    embeddings = all_gather_with_grad(local_embeddings)
    labels = all_gather_no_grad(local_labels).view(-1, 1)
    index_positive = (pfc.class_start <= labels) & (labels < pfc.class_start + pfc.num_local)
    # torch.where, not boolean-mask assignment (which syncs to count the mask): the same labels
    labels = torch.where(index_positive, labels - pfc.class_start, torch.full_like(labels, -1))
    weight = pfc.sample(labels, index_positive) if pfc.sample_rate < 1 else pfc.weight
    return embeddings, labels, weight
