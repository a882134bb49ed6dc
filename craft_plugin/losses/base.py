"""The margin-loss contract of arcface_torch's Partial FC.

Partial FC calls ``margin_softmax(logits, labels)`` with ``logits`` the clamped cosines (B_global,
C_local) of this rank's (possibly sampled) class shard and ``labels`` (B, 1), -1 where the class
lives on another rank; it returns the logits of the distributed softmax cross-entropy.
:class:`MarginLoss` changes only the B target logits in place (``target_logit``) and scales the
whole matrix once (``scale_factor``: ``s``, or a (B, 1) tensor), like upstream's CombinedMarginLoss:
no (B, C) one-hot. A loss that also needs each row's feature norm sets ``needs_norms`` and receives
``norms`` (B_global, 1) from :func:`craft_plugin.losses.norm_aware_pfc.norm_aware_partial_fc`,
which also applies ``total_loss`` (loss weights, regularisers) to the cross-entropy.

Upstream's ``config.interclass_filtering_threshold`` (read by arcface_torch's CombinedMarginLoss,
shipped at 0.4 in its WebFace12M configs) is part of the contract, for every loss: with a
threshold t > 0, every non-target cosine c_ij > t becomes 0 with zero gradient (targets exempt; a
row whose class lives on another rank, label -1, has all of them filtered), BEFORE the loss's
margin, map and scale, as upstream filters before its margin. The materialised path applies it in
:meth:`MarginLoss.forward` (then ``margin_forward``), the chunked path through ``elementwise`` /
``elementwise_vjp`` (then the loss's own ``logit_map``), once here, not per loss.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from craft_plugin.validation import positive

COS_EPS = 1e-6  # acos is clamped to [-1 + eps, 1 - eps]: finite gradients at cos = +-1


def at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 logits (an AMP backbone) become float32; float64 stays (tests, gradcheck)."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def target_positions(labels: torch.Tensor):
    """``(rows, cols)``: the rows of the global batch whose class lives on this rank, and that
    class's column (labels are -1 elsewhere). One host sync per step: ``nonzero`` must learn the
    count to size its output, as upstream's ``torch.where(labels != -1)`` in CombinedMarginLoss and
    DistCrossEntropy; every path that indexes the B targets goes through here."""
    flat = labels.view(-1)
    rows = torch.nonzero(flat != -1).view(-1)
    return rows, flat[rows]


def theta_of(cos: torch.Tensor) -> torch.Tensor:
    return torch.acos(cos.clamp(-1 + COS_EPS, 1 - COS_EPS))


def _target_grad(ctx, grad_target: torch.Tensor) -> torch.Tensor:
    """d loss / d target for the B targets, from the small autograd graph of ``fn`` kept in ctx."""
    if not ctx.new.requires_grad:
        return torch.zeros_like(grad_target)
    return torch.autograd.grad(ctx.new, ctx.target, grad_target, retain_graph=True)[0]


def _targets_through(ctx, logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, fn) -> torch.Tensor:
    """``fn(logits[rows, cols])``, remembering its graph over the B targets for the backward."""
    with torch.enable_grad():
        ctx.target = logits[rows, cols].detach().requires_grad_(True)
        ctx.new = fn(ctx.target)
    return ctx.new.detach().to(logits.dtype)


def filter_interclass_(cos: torch.Tensor, threshold: float) -> torch.Tensor:
    """In place: every cosine above ``threshold`` becomes 0 (the chunked path's targets are
    exempted by its caller, which keeps them apart); returns ``cos``."""
    return cos.masked_fill_(cos > threshold, 0)


class _InterclassFilter(torch.autograd.Function):
    """In place on the (B, C) cosines: the non-target ones above ``threshold`` become 0, with zero
    gradient (upstream's CombinedMarginLoss multiplies by the same 0/1 mask). The mask is kept as
    bool (B, C) for the backward; target columns come from a fixed-size gather over every row
    (label -1: every column of the row is a negative), so no host sync."""

    @staticmethod
    def forward(ctx, logits, labels, threshold):
        with torch.no_grad():
            flat = labels.view(-1)
            every = torch.arange(flat.numel(), device=flat.device)
            cols = flat.clamp(min=0)
            dirty = logits > threshold
            dirty[every, cols] &= flat == -1
            logits.masked_fill_(dirty, 0)
        ctx.mark_dirty(logits)
        ctx.save_for_backward(dirty)
        return logits

    @staticmethod
    def backward(ctx, grad):
        (dirty,) = ctx.saved_tensors
        return grad.masked_fill(dirty, 0), None, None


class _TargetMargin(torch.autograd.Function):
    """In place: ``logits[rows, cols] = fn(logits[rows, cols])``, every other logit optionally
    mapped by ``each`` (elementwise, straight-through gradient), then everything times ``s``.

    Backward allocates one (B, C) buffer, like the ``logits * s`` it replaces: the gradient is
    ``s * grad`` off-target and ``s * grad * fn'(t)`` on the B targets, where fn' comes from a
    small autograd graph over the B target values only.
    """

    @staticmethod
    def forward(ctx, logits, rows, cols, fn, s, each):
        new = _targets_through(ctx, logits, rows, cols, fn)
        with torch.no_grad():
            if each is not None:
                each(logits)
            logits[rows, cols] = new
            logits.mul_(s)
        ctx.mark_dirty(logits)
        ctx.save_for_backward(rows, cols)
        ctx.s = s
        return logits

    @staticmethod
    def backward(ctx, grad):
        rows, cols = ctx.saved_tensors
        out = grad * ctx.s
        out[rows, cols] = _target_grad(ctx, grad[rows, cols] * ctx.s).to(out.dtype)
        return out, None, None, None, None, None


class _RowScaledTargetMargin(torch.autograd.Function):
    """``z = n * c`` with ``c`` the logits whose targets became ``fn(logits[rows, cols])`` and
    ``n`` (B, 1) a per-row scale with gradient (the feature norm of SphereFace-R's "none"/"soft").

    One new (B, C) buffer forward and one backward, as ``logits * n`` alone costs; the input
    logits are kept for ``dz/dn``: ``sum_j grad_ij c_ij`` as B dot products (no (B, C) product),
    corrected on the B targets where ``c`` holds ``fn(t)`` instead of ``t``.
    """

    @staticmethod
    def forward(ctx, logits, rows, cols, fn, scale):
        new = _targets_through(ctx, logits, rows, cols, fn)
        with torch.no_grad():
            out = logits * scale
            out[rows, cols] = new * scale[rows, 0]
        ctx.save_for_backward(logits, rows, cols, scale, new)
        return out

    @staticmethod
    def backward(ctx, grad):
        logits, rows, cols, scale, new = ctx.saved_tensors
        grad_target = grad[rows, cols]
        out = grad * scale
        out[rows, cols] = _target_grad(ctx, grad_target * scale[rows, 0]).to(out.dtype)
        grad_scale = None
        if ctx.needs_input_grad[4]:
            dots = torch.bmm(grad.unsqueeze(1), logits.unsqueeze(2)).view(-1)
            grad_scale = dots.index_add_(0, rows, grad_target * (new - logits[rows, cols])).view_as(scale)
        return out, None, None, None, grad_scale


class MarginLoss(torch.nn.Module):
    """Base class. Subclasses implement ``target_logit`` and may override ``scale_factor``,
    ``logit_map`` (+ ``logit_map_vjp``), ``fused``, ``total_loss``, ``on_step`` and
    ``margin_forward`` (``forward`` is the contract's: the inter-class filter, then
    ``margin_forward``); ``s`` is the scale (hard normalisation)."""

    # upstream's config.interclass_filtering_threshold, set by the margin-loss feature; 0: off
    interclass_filtering_threshold = 0.0
    needs_norms = False
    needs_target_cosines = False  # the chunked path calls prepare_targets before any chunk
    source = ""  # the paper, and where the constructor's defaults come from (the loss's preset cites it)
    # constructor parameters whose default None stands for a value chosen by another parameter:
    # {parameter: (the other parameter, {its value: the value in force})}
    defaults_by: dict = {}

    def __init__(self, s: float):
        super().__init__()
        self.s = positive("margin_loss.s", s)

    def target_logit(self, cos: torch.Tensor, rows: torch.Tensor, batch: int) -> torch.Tensor:
        """New logits of the positive ``rows`` (indices into the global batch of ``batch``)."""
        raise NotImplementedError

    def logit_map(self):
        """The loss's own in-place map of every logit (the targets are then overwritten), or None
        (the default: only the targets change). It may hold per-row parameters ((B_global, 1),
        set by ``prepare_targets``): the chunked path applies it to (B_global, chunk) blocks."""
        return None

    def logit_map_vjp(self, cos: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The gradient reaching the cosines ``cos`` through ``logit_map()`` given ``grad``, that of
        the mapped logits: ``grad`` itself for a straight-through map (the default)."""
        return grad

    def elementwise(self):
        """What the chunked Partial FC (:mod:`craft_plugin.partial_fc.lean`) maps every logit of a
        chunk with, in place: the inter-class filter when it is on, then ``logit_map()``; None when
        both are off."""
        own, threshold = self.logit_map(), self.interclass_filtering_threshold
        if threshold <= 0:
            return own

        def filtered_then_own(cos: torch.Tensor) -> torch.Tensor:
            filter_interclass_(cos, threshold)
            return cos if own is None else own(cos)

        return filtered_then_own

    def elementwise_vjp(self, cos: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The gradient reaching the raw cosines ``cos`` through ``elementwise()`` given ``grad``:
        ``logit_map_vjp`` at the filtered cosines, zeroed where the filter zeroed them. ``grad``
        may be overwritten."""
        threshold = self.interclass_filtering_threshold
        if threshold <= 0:
            return self.logit_map_vjp(cos, grad)
        dirty = cos > threshold
        if self.logit_map() is not None:
            grad = self.logit_map_vjp(cos.masked_fill(dirty, 0), grad)
        return grad.masked_fill_(dirty, 0)

    def target_logit_given_norms(self, cos: torch.Tensor, rows: torch.Tensor, batch: int,
                                 norms: Optional[torch.Tensor]) -> torch.Tensor:
        """``target_logit`` as a function of the cosines and of the feature norms (B_global, 1), for
        a loss whose target differentiates in both (MagFace's margin m(||x||)); the chunked Partial
        FC calls this one, with the norms when ``needs_norms``, and takes both gradients. Default:
        ``target_logit``, constant in the norms."""
        return self.target_logit(cos, rows, batch)

    def prepare_targets(self, target: torch.Tensor) -> None:
        """Called by the chunked Partial FC before any chunk when ``needs_target_cosines``:
        ``target`` (B_global,) holds this rank's positive rows' target cosines, 0 for the rows
        whose class lives on another rank and for -1 rows. Per-row state that ``logit_map`` and
        ``logit_map_vjp`` read (CurricularFace's thresholds). Nothing by default."""

    def prepare(self, norms: Optional[torch.Tensor]) -> None:
        """Called once per forward before any logit, by both Partial FC paths: per-step state from
        the global batch's feature norms (AdaFace's moving averages). Nothing by default."""

    def chunkable(self) -> bool:
        """Whether the chunked Partial FC computes this loss: all of it is ``prepare``,
        ``prepare_targets``, ``target_logit_given_norms`` (called once per forward),
        ``elementwise`` (+ ``elementwise_vjp``),
        ``scale_factor`` and ``total_loss``. True when ``forward`` and ``margin_forward`` are this
        class's; a loss overriding ``margin_forward`` opts in."""
        return type(self).forward is MarginLoss.forward and type(self).margin_forward is MarginLoss.margin_forward

    def scale_factor(self, norms: Optional[torch.Tensor]) -> Union[float, torch.Tensor]:
        """What the logits are multiplied by: ``s``, or a (B, 1) tensor such as the feature norms."""
        return self.s

    def scaled(self, logits: torch.Tensor, norms: Optional[torch.Tensor]) -> torch.Tensor:
        scale = self.scale_factor(norms)
        return logits * (scale.to(logits.dtype) if torch.is_tensor(scale) else scale)

    def total_loss(self, ce: torch.Tensor, norms: Optional[torch.Tensor], world_size: int) -> torch.Tensor:
        """The training loss from the distributed cross-entropy (identity by default)."""
        return ce

    def on_step(self) -> None:
        """One real optimizer step was taken (margin schedules)."""

    def fused(self) -> bool:
        """Whether the fused path applies (targets through ``target_logit``, other logits through
        ``logit_map`` with straight-through gradient, the latter only with the scalar scale ``s``);
        otherwise plain autograd."""
        return True

    def forward(self, logits: torch.Tensor, labels: torch.Tensor,
                norms: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The materialised contract: the inter-class filter (when on), then ``margin_forward``."""
        logits = at_least_float32(logits)
        if self.interclass_filtering_threshold > 0:
            logits = _InterclassFilter.apply(logits, labels, self.interclass_filtering_threshold)
        return self.margin_forward(logits, labels, norms)

    def margin_forward(self, logits: torch.Tensor, labels: torch.Tensor,
                       norms: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The margin, map and scale of the (already filtered) float32+ cosines."""
        self.prepare(norms)
        logits = at_least_float32(logits)
        rows, cols = target_positions(labels)
        batch = logits.size(0)
        if self.fused():
            fn, scale, each = (lambda t: self.target_logit(t, rows, batch)), self.scale_factor(norms), self.logit_map()
            if not torch.is_tensor(scale):
                return _TargetMargin.apply(logits, rows, cols, fn, scale, each)
            if each is not None:
                raise NotImplementedError(f"{type(self).__name__}: a per-row scale with a logit_map "
                                          "has no fused path; fused() must return False for it")
            return _RowScaledTargetMargin.apply(logits, rows, cols, fn, scale.to(logits.dtype))
        logits[rows, cols] = self.target_logit(logits[rows, cols], rows, batch)
        return self.scaled(logits, norms)

    def upstream_margin_list(self) -> Optional[tuple]:
        """Upstream's ``config.margin_list`` that means this same loss, or None (no such list)."""
        return None

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass
