"""A norm-aware drop-in for arcface_torch's ``PartialFC_V2``.

``norm_aware_partial_fc(cls)`` subclasses the given Partial FC class (upstream's or our
replica): same constructor arguments, parameters and ``state_dict`` keys (checkpoints
interchange) and the same sampling (the base class's ``sample``). Its forward also all-gathers
each row's feature norm ||x_i|| with gradient and passes it to margin losses that declare
``needs_norms``, and finishes with the loss's ``total_loss`` (loss weight, regulariser).
"""
from __future__ import annotations

import torch
from torch.nn.functional import linear, normalize

from craft_plugin.distributed import gather_shard_batch
from craft_plugin.losses.base import at_least_float32


def norm_aware_partial_fc(base: type) -> type:
    class NormAwarePartialFC(base):
        def forward(self, local_embeddings: torch.Tensor, local_labels: torch.Tensor) -> torch.Tensor:
            embeddings, labels, weight = gather_shard_batch(self, local_embeddings, local_labels)
            device = embeddings.device.type
            with torch.autocast(device, enabled=self.fp16, dtype=torch.float16 if device == "cuda" else torch.bfloat16):
                logits = linear(normalize(embeddings), normalize(weight))
            logits = at_least_float32(logits).clamp(-1, 1)
            norms = at_least_float32(embeddings).norm(dim=1, keepdim=True)
            margin = self.margin_softmax
            logits = margin(logits, labels, norms) if getattr(margin, "needs_norms", False) else margin(logits, labels)
            loss = self.dist_cross_entropy(logits, labels)
            if hasattr(margin, "total_loss"):
                loss = margin.total_loss(loss, norms, self.world_size)
            return loss

    NormAwarePartialFC.__name__ = NormAwarePartialFC.__qualname__ = f"NormAware{base.__name__}"
    return NormAwarePartialFC
