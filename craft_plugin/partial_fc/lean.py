"""Lean Partial FC: the margin softmax cross-entropy over a class shard, in class chunks.

``lean_partial_fc(base, chunk, recompute)`` subclasses the Partial FC class the ``partial_fc_class`` hook
receives (upstream's ``PartialFC_V2`` or our replica): same constructor, parameters,
``state_dict`` keys, ``sample()`` for ``sample_rate < 1`` and fp16 autocast. Its forward computes
what upstream's materialised step computes (arXiv 2203.15565, ArcFace arXiv 1801.07698)

    c_ij = clamp(<x_i/||x_i||, w_j/||w_j||>, -1, 1),   z_ij = n_i * a_ij,
    a_ij = f(c_ij) for the target j = y_i,  g(c_ij) otherwise,
    loss = -1/B sum_i log( exp(z_{i,y_i}) / sum_ranks sum_j exp(z_ij) )

(f: the loss's ``target_logit_given_norms``, a function of the target cosine and of the feature
norms; g: its ``elementwise`` map or the identity, which may hold per-row parameters; n: its
``scale_factor``, s or the feature norm) without a (B_global, C_local) tensor, the blockwise
log-sum-exp of Cut Cross-Entropy (Wijmans et al., arXiv 2411.09009) carried over to margins:

- forward: for a loss with ``needs_target_cosines``, first the B target cosines as dot products,
  handed to its ``prepare_targets`` (CurricularFace's thresholds, before any chunk); then per
  chunk of ``chunk`` classes one GEMM, then per row a running max and sum of
  exponentials of the non-target logits, and the B target cosines; f is applied once to the B
  targets (a stateful loss draws once per step), the targets are merged in, and max and sum are
  all-reduced across ranks as upstream's ``DistCrossEntropy`` does;
- backward: each chunk's cosines are recomputed (one GEMM; ``recompute=True``, 4 GEMMs per step)
  or read back from the one (B, C) buffer the forward wrote them into (``recompute=False``, 3
  GEMMs per step), and ``dz = (softmax - onehot) * dL/B`` formed;
  ``dn_i = sum_j dz_ij a_ij``; ``dc = n dz`` through g's gradient (``elementwise_vjp``) and, on the
  targets, f'(t) from a small autograd graph over the B targets and the norms (which also gives
  the norms' gradient through f, a B-sized term: MagFace's m(||x||)); two GEMMs give the embedding
  gradient (accumulated) and the chunk's weight gradient, pushed through the chunk's weight
  normalisation.

Peak extra memory is a few (B, chunk) buffers plus the weight gradient itself, and with
``recompute=False`` the kept (B, C) cosines (float32, or the autocast dtype under fp16 autocast).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import distributed
from torch.nn.functional import linear, normalize

from craft_plugin.distributed import all_reduce_, gather_shard_batch
from craft_plugin.errors import ConfigError
from craft_plugin.losses.base import MarginLoss, at_least_float32, target_positions

DEFAULT_CHUNK = 8192


DEFAULT_RECOMPUTE = True


def autocast(device: str, enabled: bool):
    """Partial FC's mixed precision: float16 on CUDA, bfloat16 on CPU, as the replica."""
    return torch.autocast(device, enabled=enabled, dtype=torch.float16 if device == "cuda" else torch.bfloat16)


NORM_EPS = 1e-12  # torch.nn.functional.normalize's


class _Chunk:
    """One chunk of classes ``[start, stop)``: its normalised centres ``wn`` (k, D) and where this
    rank's targets (``cols``, one per positive row) fall in it."""

    def __init__(self, weight, norm, start, stop, cols):
        self.start, self.stop = start, stop
        self.wn = weight[start:stop] / norm[start:stop]  # F.normalize's division, row by row
        self.hit = (cols >= start) & (cols < stop)
        self.local = (cols - start).clamp(0, stop - start - 1)

    def put(self, tensor: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> None:
        """``tensor[row, target column] = value`` for the targets inside this chunk (no host sync:
        the others write back what they read)."""
        tensor[rows, self.local] = torch.where(self.hit, values, tensor[rows, self.local])


class _Recomputed:
    """``recompute=True``: each chunk's cosines come from a GEMM in the forward and again in the
    backward (4 GEMMs per step, nothing of size (B, C) kept)."""

    once = False  # its backward may run again (retain_graph)

    def __init__(self, batch: int, classes: int, fp16: bool):
        self.fp16 = fp16

    def forward(self, xn: torch.Tensor, part: _Chunk) -> torch.Tensor:
        """The chunk's cosines (B, k) clamped to [-1, 1], a fresh tensor the caller may write into."""
        return self._raw(xn, part).clamp_(-1, 1)

    def backward(self, xn: torch.Tensor, part: _Chunk) -> tuple:
        """The same clamped cosines (fresh) and the clamp's gradient mask (bool)."""
        raw = self._raw(xn, part)
        inside = (raw >= -1) & (raw <= 1)  # bool: a quarter buffer each
        return raw.clamp_(-1, 1), inside

    def _raw(self, xn: torch.Tensor, part: _Chunk) -> torch.Tensor:
        with autocast(xn.device.type, self.fp16):
            return at_least_float32(linear(xn, part.wn))


class _Kept(_Recomputed):
    """``recompute=False``: the forward's GEMM output of each chunk is copied into one (B, C)
    buffer (in the GEMM's dtype: float32, or float16/bfloat16 under autocast, so nothing is
    rounded) and the backward reads it back instead of recomputing it: 3 GEMMs per step. The raw,
    not the clamped, cosines are kept because the clamp's gradient mask needs them (a cosine of
    exactly 1 passes the gradient, 1 + eps does not)."""

    once = True  # the buffer is freed by the backward, not kept alive by the loss tensor

    def __init__(self, batch: int, classes: int, fp16: bool):
        super().__init__(batch, classes, fp16)
        self.batch, self.classes, self.flat = batch, classes, None

    def forward(self, xn: torch.Tensor, part: _Chunk) -> torch.Tensor:
        if not self.fp16:  # the GEMM writes straight into the block (linear's own mm)
            self._allocate(xn.dtype, xn.device)
            block = self._block(part)
            torch.mm(xn, part.wn.t(), out=block)
            return block.clamp(-1, 1)
        with autocast(xn.device.type, True):
            out = linear(xn, part.wn)
        self._allocate(out.dtype, out.device)
        self._block(part).copy_(out)
        return at_least_float32(out).clamp_(-1, 1)

    def _allocate(self, dtype: torch.dtype, device: torch.device) -> None:
        if self.flat is None:  # one allocation, each chunk a contiguous (B, k) block of it
            self.flat = torch.empty(self.batch * self.classes, dtype=dtype, device=device)

    def backward(self, xn: torch.Tensor, part: _Chunk) -> tuple:
        raw = self._block(part)
        wide = at_least_float32(raw)
        c = wide.clamp(-1, 1) if wide is raw else wide.clamp_(-1, 1)
        return c, c == raw  # equal exactly where the clamp passed the cosine (and its gradient)

    def _block(self, part: _Chunk) -> torch.Tensor:
        return self.flat[self.batch * part.start:self.batch * part.stop].view(self.batch, -1)


def _scaled_minus(a: torch.Tensor, n, shift: torch.Tensor, out=None) -> torch.Tensor:
    """``n * a - shift`` in one pass (n a number or a (B, 1) tensor, shift (B, 1))."""
    if torch.is_tensor(n):
        return torch.addcmul(-shift, a, n, out=out)
    return torch.add(-shift, a, alpha=n, out=out)


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum(1, keepdim=True)`` as a batch of dot products, without the (n, m) product."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1, 1)


class _ChunkedMarginCE(torch.autograd.Function):
    """The distributed margin cross-entropy of normalised embeddings ``xn`` (B, D) against the
    class shard ``weight`` (C, D); ``scale`` the loss's ``scale_factor``: a number, or a (B, 1)
    tensor (a per-row scale with gradient)."""

    @staticmethod
    def forward(ctx, xn, weight, scale, norms, labels, loss, chunk, fp16, recompute):
        batch, classes = xn.size(0), weight.size(0)
        ctx.cosines = cosines = (_Recomputed if recompute else _Kept)(batch, classes, fp16)
        rows, cols = target_positions(labels)
        n = scale
        norm = weight.detach().norm(dim=1, keepdim=True).clamp_min(NORM_EPS)
        dtype = at_least_float32(xn).dtype
        if loss.needs_target_cosines:
            loss.prepare_targets(_target_cosines(xn, weight, norm, rows, cols, dtype, fp16))
        each = loss.elementwise()
        row_max = torch.full((batch, 1), torch.finfo(dtype).min, dtype=dtype, device=xn.device)
        row_sum = torch.zeros_like(row_max)
        target = torch.zeros(rows.size(0), dtype=dtype, device=xn.device)
        for start in range(0, classes, chunk):
            part = _Chunk(weight, norm, start, min(start + chunk, classes), cols)
            z = cosines.forward(xn, part)
            target = torch.where(part.hit, z[rows, part.local], target)
            if each is not None:
                each(z)
            z.mul_(n)
            part.put(z, rows, torch.full_like(target, -float("inf")))
            new_max = torch.maximum(row_max, z.amax(dim=1, keepdim=True))
            row_sum.mul_((row_max - new_max).exp_()).add_(z.sub_(new_max).exp_().sum(dim=1, keepdim=True))
            row_max = new_max
            del part, z  # before the next chunk's buffers exist
        with torch.enable_grad():  # f once per step (a stateful loss draws once), its graph over B values kept
            ctx.t = target.requires_grad_(True)
            ctx.norms = None if norms is None else norms.detach().requires_grad_(True)
            ctx.ft = loss.target_logit_given_norms(ctx.t, rows, batch, ctx.norms)
        ft = ctx.ft.detach().to(dtype)
        z_target = ft * (n[rows, 0] if torch.is_tensor(n) else n)
        merged = torch.maximum(row_max[rows, 0], z_target)
        row_sum[rows, 0] = row_sum[rows, 0] * (row_max[rows, 0] - merged).exp() + (z_target - merged).exp()
        row_max[rows, 0] = merged
        global_max = all_reduce_(row_max.clone(), distributed.ReduceOp.MAX)
        row_sum.mul_((row_max - global_max).exp_())
        all_reduce_(row_sum)
        p_target = (z_target - global_max[rows, 0]).exp() / row_sum[rows, 0]
        prob = torch.zeros(batch, dtype=dtype, device=xn.device)
        prob[rows] = p_target
        all_reduce_(prob)
        log_norm = global_max + row_sum.log()  # log sum_j exp z_ij over every rank's classes
        ctx.save_for_backward(xn, weight, norm, n if torch.is_tensor(n) else None, rows, cols, log_norm, ft, p_target)
        ctx.loss, ctx.chunk, ctx.fp16, ctx.scalar = loss, chunk, fp16, None if torch.is_tensor(n) else n
        return -prob.clamp_min(1e-30).log().mean()

    @staticmethod
    def backward(ctx, grad_loss):
        xn, weight, norm, scale, rows, cols, log_norm, ft, p_target = ctx.saved_tensors
        loss, chunk, cosines = ctx.loss, ctx.chunk, ctx.cosines
        if cosines is None:
            raise RuntimeError('a second backward through the lean Partial FC with partial_fc "recompute": False: '
                               "its kept cosines went with the first (use the default recompute for retain_graph)")
        if cosines.once:
            ctx.cosines = None
        batch, classes = xn.size(0), weight.size(0)
        g = grad_loss / batch
        n = scale if scale is not None else ctx.scalar
        n_rows = n[rows, 0] if torch.is_tensor(n) else n
        dc_target, grad_norms = _target_backward(ctx, ((p_target - 1) * g * n_rows))
        dc_target = dc_target.to(log_norm.dtype)
        each = loss.elementwise()
        want_scale = scale is not None and ctx.needs_input_grad[2]
        grad_scale = None
        if want_scale:  # d/dn_i of the target's -z_iy: once, not per chunk
            grad_scale = torch.zeros_like(scale).index_add_(0, rows, (-g * ft).view(-1, 1))
        grad_xn = torch.zeros(xn.shape, dtype=log_norm.dtype, device=xn.device)
        grad_weight = torch.empty_like(weight) if ctx.needs_input_grad[1] else None
        for start in range(0, classes, chunk):
            part = _Chunk(weight, norm, start, min(start + chunk, classes), cols)
            c, inside = cosines.backward(xn, part)
            a = each(c.clone()) if each is not None else c
            part.put(a, rows, ft)
            if want_scale:
                p = _scaled_minus(a, n, log_norm).exp_()
                grad_scale += _row_dot(p, a).mul_(g)
                da = p.mul_(g * n)
            else:  # softmax * dL/B * n, in place
                da = _scaled_minus(a, n, log_norm, out=a).exp_().mul_(g * n)
            dc = loss.elementwise_vjp(c, da) if each is not None else da
            part.put(dc, rows, dc_target)
            dc.mul_(inside)
            del c, a, inside
            _linear_backward(dc, xn, part, grad_xn, grad_weight, norm, ctx.fp16)
            del part, da, dc  # before the next chunk's buffers exist
        del cosines  # the kept (B, C) buffer, before the optimizer step allocates anything
        return grad_xn.to(xn.dtype), grad_weight, grad_scale, grad_norms, None, None, None, None, None


def _target_cosines(xn, weight, norm, rows, cols, dtype, fp16) -> torch.Tensor:
    """(B,) the clamped cosines of this rank's positive rows with their target centres as B dot
    products (in the chunks' precision), 0 for the other rows."""
    with autocast(xn.device.type, fp16):
        dots = _row_dot(xn[rows], weight[cols] / norm[cols])
    target = torch.zeros(xn.size(0), dtype=dtype, device=xn.device)
    target[rows] = at_least_float32(dots).view(-1).to(dtype).clamp(-1, 1)
    return target


def _target_backward(ctx, grad_ft):
    """f's gradients from its small graph over the B targets: to the target cosines (zeros when f
    ignores them) and to the feature norms (None unless f depends on them)."""
    want_norms = ctx.norms is not None and ctx.needs_input_grad[3]
    inputs = (ctx.t, ctx.norms) if want_norms else (ctx.t,)
    grads = (None, None)
    if ctx.ft.requires_grad:
        grads = torch.autograd.grad(ctx.ft, inputs, grad_ft.to(ctx.ft.dtype), allow_unused=True) + (None,)
    dc_target = grads[0] if grads[0] is not None else torch.zeros_like(ctx.t)
    return dc_target, grads[1]


def _linear_backward(dc, xn, part, grad_xn, grad_weight, norm, fp16) -> None:
    """Accumulate ``dc @ wn`` into ``grad_xn``; write the chunk's weight gradient: ``dc^T @ xn``
    through the row normalisation wn = w / ||w||, i.e. (g - wn <g, wn>) / ||w|| (just g / eps for a
    row whose norm is clamped to eps)."""
    if fp16:  # the GEMMs in the autocast dtype, as autocast runs the materialised linear's backward
        with autocast(xn.device.type, True):
            grad_xn += torch.mm(dc, part.wn)
            grad_wn = torch.mm(dc.t(), xn)
        if grad_weight is None:
            return
        out = grad_weight[part.start:part.stop]
        out.copy_(grad_wn)
    else:
        grad_xn.addmm_(dc, part.wn)
        if grad_weight is None:
            return
        out = grad_weight[part.start:part.stop]
        torch.mm(dc.t(), xn, out=out)
    wn, scale = part.wn, norm[part.start:part.stop]
    projection = _row_dot(out, wn) * (scale > NORM_EPS)
    out.addcmul_(wn, projection, value=-1).div_(scale)


def check_chunkable(margin_loss: Any, chunk: int) -> None:
    """ConfigError unless the chunked path computes ``margin_loss``."""
    if not isinstance(margin_loss, MarginLoss) or not margin_loss.chunkable():
        raise ConfigError("partial_fc", {"chunk": chunk},
                          "unset, or set together with a config.margin_loss the chunked path computes "
                          f"(its MarginLoss.chunkable()); the margin loss is {type(margin_loss).__name__}")


def lean_partial_fc(base: type, chunk: int = DEFAULT_CHUNK, recompute: bool = DEFAULT_RECOMPUTE) -> type:
    """A subclass of the Partial FC class ``base`` whose forward never holds the (B, C) logits;
    ``recompute=False`` keeps the (B, C) cosines for the backward instead of recomputing them."""

    class LeanPartialFC(base):
        chunk_size = chunk
        recompute_cosines = recompute

        def __init__(self, margin_loss, *args, **kwargs):
            check_chunkable(margin_loss, chunk)
            super().__init__(margin_loss, *args, **kwargs)

        def forward(self, local_embeddings: torch.Tensor, local_labels: torch.Tensor) -> torch.Tensor:
            embeddings, labels, weight = gather_shard_batch(self, local_embeddings, local_labels)
            margin = self.margin_softmax
            with autocast(embeddings.device.type, self.fp16):  # as the materialised step
                xn = normalize(embeddings)
            norms = at_least_float32(embeddings).norm(dim=1, keepdim=True) if margin.needs_norms else None
            margin.prepare(norms)
            scale = margin.scale_factor(norms)
            scale = scale.to(at_least_float32(xn).dtype) if torch.is_tensor(scale) else scale
            keep = not self.recompute_cosines and torch.is_grad_enabled()  # nothing kept for an evaluation forward
            loss = _ChunkedMarginCE.apply(xn, weight, scale, norms, labels, margin, self.chunk_size, self.fp16, not keep)
            return margin.total_loss(loss, norms, self.world_size)

    LeanPartialFC.__name__ = LeanPartialFC.__qualname__ = f"Lean{base.__name__}"
    return LeanPartialFC
