"""Upstream's config.interclass_filtering_threshold through every plugin loss, on both Partial FC
paths: for ArcFace and CosFace equal (value and gradient) to CombinedMarginLoss's semantics written
out here (non-target cosines above the threshold zeroed by a 0/1 mask, targets exempt, -1 rows
entirely filtered), on 1 and 2 gloo ranks with sample_rate < 1; for every other loss the filter
comes before the loss (L_t(c) = L_0(filtered c), gradient zero where filtered)."""
from __future__ import annotations

import math

import pytest
import torch
from easydict import EasyDict

import craft_plugin.plugin
from craft_plugin.distributed import rank_and_world_size
from craft_plugin.errors import ConfigError
from craft_plugin.losses import MARGIN_LOSSES, build_margin_loss
from craft_plugin.losses.norm_aware_pfc import norm_aware_partial_fc
from craft_plugin.partial_fc.lean import lean_partial_fc
from craft_plugin._replica.launch import run_distributed
from craft_plugin._replica.losses import CombinedMarginLoss
from craft_plugin._replica.partial_fc import PartialFC_V2

THRESHOLD = 0.2
BATCH, DIM, CLASSES, CHUNK = 12, 16, 40, 7
UPSTREAM_FORMS = {"arcface": (1.0, 0.5, 0.0), "cosface": (1.0, 0.0, 0.4)}  # margin_list of each


class UpstreamFiltered(torch.nn.Module):
    """CombinedMarginLoss's forward as a formula over the dense (B, C) matrix: keep = 1 where
    c <= t or on the target, 0 elsewhere; c' = keep * c (the mask carries no gradient); ArcFace
    target cos(acos c' + m2) with the gradient of c' (upstream's no_grad arccos/cos), CosFace
    target c' - m3; times 64."""

    def __init__(self, margins, threshold):
        super().__init__()
        self.m1, self.m2, self.m3 = margins
        self.threshold = threshold

    def forward(self, logits, labels):
        flat = labels.view(-1)
        onehot = torch.zeros(logits.shape, dtype=torch.bool)
        rows = torch.nonzero(flat != -1).view(-1)
        onehot[rows, flat[rows]] = True
        keep = ((logits <= self.threshold) | onehot).to(logits.dtype) if self.threshold > 0 else 1.0
        c = logits * keep
        if self.m3 == 0.0:
            shifted = torch.cos(torch.acos(c.detach().clamp(-1, 1)) + self.m2)
            out = c + torch.where(onehot, shifted - c.detach(), torch.zeros_like(c))
        else:
            out = c - self.m3 * onehot.to(c.dtype)
        return out * 64.0


def cosines(rows=BATCH, cols=CLASSES, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(rows, cols, generator=gen, dtype=torch.float64) * 1.6 - 0.8)


def labels_with_minus_one(rows=BATCH, cols=CLASSES, seed=0):
    gen = torch.Generator().manual_seed(seed + 1)
    y = torch.randint(0, cols, (rows, 1), generator=gen)
    y[2] = y[7] = -1
    return y


def plugin_loss(spec, threshold):
    loss = build_margin_loss(spec)
    loss.interclass_filtering_threshold = threshold
    return loss


def value_and_grad(loss, cos, labels, norms=None, weights=None):
    leaf = cos.clone().requires_grad_(True)
    out = loss(leaf * 1.0, labels.clone()) if norms is None else loss(leaf * 1.0, labels.clone(), norms)
    if weights is None:
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(9), dtype=out.dtype)
    (out * weights).sum().backward()
    return out.detach(), leaf.grad


@pytest.mark.parametrize("name", sorted(UPSTREAM_FORMS))
def test_arcface_cosface_equal_upstream_filtered_loss_value_and_gradient(name):
    cos, y = cosines(), labels_with_minus_one()
    reference = UpstreamFiltered(UPSTREAM_FORMS[name], THRESHOLD)
    want = value_and_grad(reference, cos, y)
    got = value_and_grad(plugin_loss(name, THRESHOLD), cos, y)
    replica = value_and_grad(CombinedMarginLoss(64, *UPSTREAM_FORMS[name], THRESHOLD), cos, y)
    for have in (got, replica):
        assert torch.allclose(have[0], want[0], rtol=0, atol=1e-12)
        assert torch.allclose(have[1], want[1], rtol=0, atol=1e-12)
    dirty = cos > THRESHOLD
    dirty[torch.arange(BATCH)[y.view(-1) != -1], y.view(-1)[y.view(-1) != -1]] = False
    assert dirty.sum() > 50 and torch.all(got[0][dirty] == 0) and torch.all(got[1][dirty] == 0)
    assert torch.all(got[0][2][cos[2] > THRESHOLD] == 0)  # a -1 row: every cosine above t is filtered
    # a target above the threshold keeps its margin: the filter did not touch it
    target_rows = [i for i in range(BATCH) if y[i, 0] != -1 and cos[i, y[i, 0]] > THRESHOLD]
    assert target_rows and all(got[0][i, y[i, 0]] != 0 for i in target_rows)
    unfiltered = value_and_grad(plugin_loss(name, 0.0), cos, y)
    assert not torch.allclose(unfiltered[0], got[0])  # the comparison can fail


def pfc_step(kind, name, threshold, sample_rate, world_size=1, rank=0, dtype=torch.float64):
    """(loss, embedding gradient, weight gradient) of one Partial FC step: ``kind`` "upstream"
    (the replica Partial FC with the formula above), "materialised", "lean" or "lean-kept" (the
    plugin's loss; the lean path recomputing, or keeping, the cosines for the backward)."""
    torch.manual_seed(0)
    if kind == "upstream":
        pfc = PartialFC_V2(UpstreamFiltered(UPSTREAM_FORMS[name], threshold), DIM, CLASSES, sample_rate, False)
    else:
        cls = (lean_partial_fc(PartialFC_V2, CHUNK, kind == "lean") if kind.startswith("lean")
               else norm_aware_partial_fc(PartialFC_V2))
        pfc = cls(plugin_loss(name, threshold), DIM, CLASSES, sample_rate, False)
    pfc = pfc.to(dtype)
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(CLASSES, DIM, generator=gen, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (BATCH,), generator=gen)
    x = (torch.nn.functional.normalize(weight[y]) * 2 + torch.randn(BATCH, DIM, generator=gen, dtype=torch.float64))
    y[4] = -1
    with torch.no_grad():
        pfc.weight.copy_(weight[pfc.class_start:pfc.class_start + pfc.num_local])
    per = BATCH // world_size
    x = x[rank * per:(rank + 1) * per].to(dtype).requires_grad_(True)
    torch.manual_seed(5 + rank)  # the sampled negatives
    loss = pfc(x, y[rank * per:(rank + 1) * per].clone())
    loss.backward()
    return loss.detach(), x.grad, pfc.weight.grad


def steps_on_every_path():
    rank, world_size = rank_and_world_size()
    out = {}
    for name in sorted(UPSTREAM_FORMS):
        for sample_rate in (1.0, 0.5):
            for threshold in (THRESHOLD, 0.0):
                out[name, sample_rate, threshold] = {
                    kind: pfc_step(kind, name, threshold, sample_rate, world_size, rank)
                    for kind in ("upstream", "materialised", "lean", "lean-kept")}
    return out


def assert_paths_equal_upstream(results):
    for (name, sample_rate, threshold), by_kind in results.items():
        want = by_kind["upstream"]
        for kind in ("materialised", "lean", "lean-kept"):
            for got, ref, what in zip(by_kind[kind], want, ("loss", "embedding gradient", "weight gradient")):
                err = float((got - ref).abs().max() / ref.abs().max())
                assert err <= 1e-10, (name, sample_rate, threshold, kind, what, err)
    for name in UPSTREAM_FORMS:  # the filter changes the step: the comparison above can fail
        for sample_rate in (1.0, 0.5):
            on, off = results[name, sample_rate, THRESHOLD]["lean"], results[name, sample_rate, 0.0]["lean"]
            assert not torch.allclose(on[0], off[0]) and not torch.allclose(on[2], off[2])


def test_one_rank_both_partial_fc_paths_equal_upstream():
    assert_paths_equal_upstream(steps_on_every_path())


SPHEREFACE_VARIANTS = [{"name": "sphereface-r", "magnitude": m, "norm": n, "detach": d}
                       for m in ("v0", "v2") for n in ("hard", "soft") for d in (True, False)]
ALL_SPECS = [{"name": name} for name in MARGIN_LOSSES.names()] + SPHEREFACE_VARIANTS
ALL_IDS = ["-".join(str(v) for v in spec.values()) for spec in ALL_SPECS]


def filtered(cos, labels, threshold):
    """The cosines after the filter, written out: negatives above the threshold set to 0."""
    out = cos.clone()
    for i in range(cos.size(0)):
        for j in range(cos.size(1)):
            if cos[i, j] > threshold and labels[i, 0] != j:
                out[i, j] = 0.0
    return out


@pytest.mark.parametrize("spec", ALL_SPECS, ids=ALL_IDS)
def test_every_loss_filters_before_its_margin(spec):
    """L_t(c) = L_0(filter(c)) in value; the gradient is L_0's at filter(c), zero where filtered."""
    cos, y = cosines(8, 9, seed=4), labels_with_minus_one(8, 9, seed=4)
    norms = torch.rand(8, 1, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 40 + 10
    needs = build_margin_loss(spec).needs_norms
    norms = norms if needs else None
    got = value_and_grad(plugin_loss(spec, THRESHOLD), cos, y, norms)
    clean = filtered(cos, y, THRESHOLD)
    want = value_and_grad(plugin_loss(spec, 0.0), clean, y, norms)
    keep = clean == cos
    assert (~keep).sum() > 10
    assert torch.allclose(got[0], want[0], rtol=0, atol=1e-10)
    assert torch.allclose(got[1], want[1] * keep, rtol=0, atol=1e-10)
    assert torch.all(got[1][~keep] == 0)


CHUNKED_SPECS = [spec for spec in ALL_SPECS if build_margin_loss(spec).chunkable()]


def lean_vs_materialised(spec, world_size=1, rank=0, sample_rate=0.5):
    """[lean recomputing, lean keeping the cosines, materialised]: (loss, gradients) of one step."""
    out = []
    for lean in (True, "kept", False):
        torch.manual_seed(0)
        cls = lean_partial_fc(PartialFC_V2, CHUNK, lean is True) if lean else norm_aware_partial_fc(PartialFC_V2)
        loss = plugin_loss(spec, THRESHOLD)
        pfc = cls(loss, DIM, CLASSES, sample_rate, False).to(torch.float64)
        gen = torch.Generator().manual_seed(3)
        weight = torch.randn(CLASSES, DIM, generator=gen, dtype=torch.float64)
        y = torch.randint(0, CLASSES, (BATCH,), generator=gen)
        noise = torch.randn(BATCH, DIM, generator=gen, dtype=torch.float64)
        x = (torch.nn.functional.normalize(weight[y]) * 2 + noise) * 3
        y[4] = -1
        with torch.no_grad():
            pfc.weight.copy_(weight[pfc.class_start:pfc.class_start + pfc.num_local])
        per = BATCH // world_size
        x = x[rank * per:(rank + 1) * per].requires_grad_(True)
        torch.manual_seed(5 + rank)
        value = pfc(x, y[rank * per:(rank + 1) * per].clone())
        value.backward()
        out.append((value.detach(), x.grad, pfc.weight.grad))
    return out


@pytest.mark.parametrize("spec", CHUNKED_SPECS, ids=[ALL_IDS[ALL_SPECS.index(s)] for s in CHUNKED_SPECS])
def test_every_chunked_loss_equals_its_materialised_step_with_the_filter(spec):
    *leans, plain = lean_vs_materialised(spec)
    for lean in leans:
        for got, want in zip(lean, plain):
            assert float((got - want).abs().max() / want.abs().max()) <= 1e-10


def on_two_ranks():
    rank, world_size = rank_and_world_size()
    return steps_on_every_path(), [lean_vs_materialised(spec, world_size, rank) for spec in CHUNKED_SPECS]


def test_two_gloo_ranks_equal_upstream_and_every_chunked_loss_its_materialised_step():
    ranks = run_distributed(on_two_ranks, 2)  # one launch for both checks: spawning ranks is the slow part
    for upstream_paths, every_loss in ranks:
        assert_paths_equal_upstream(upstream_paths)
        for (*leans, plain), spec in zip(every_loss, CHUNKED_SPECS):
            for lean in leans:
                for got, want in zip(lean, plain):
                    assert float((got - want).abs().max() / want.abs().max()) <= 1e-10, spec
    for key in ranks[0][0]:
        assert torch.equal(ranks[0][0][key]["lean"][0], ranks[1][0][key]["lean"][0])  # one loss on every rank


def test_the_config_key_reaches_the_loss_and_is_checked():
    cfg = craft_plugin.plugin.config(EasyDict(margin_loss="arcface", interclass_filtering_threshold=0.4))
    loss = craft_plugin.plugin.margin_loss(None, cfg)
    assert loss.interclass_filtering_threshold == 0.4
    cfg = craft_plugin.plugin.config(EasyDict(preset="cosface+craft", margin_list=(1.0, 0.0, 0.4),
                                              interclass_filtering_threshold=0.4))
    assert craft_plugin.plugin.margin_loss(None, cfg).interclass_filtering_threshold == 0.4
    for bad in (-0.1, "0.4", True, math.nan, None):
        with pytest.raises(ConfigError, match="config.interclass_filtering_threshold"):
            craft_plugin.plugin.config(EasyDict(margin_loss="arcface", interclass_filtering_threshold=bad))


def test_a_filtering_job_config_trains_the_same_with_the_plugin_s_loss(tmp_path):
    """Upstream's WebFace12M recipe (CosFace margin_list, sample_rate < 1, a filter threshold) trained
    by the replica: with preset "cosface" it is the same run, bit for bit; without the filter it is
    not (so the comparison can fail)."""
    from craft_plugin._replica.config import get_config
    from craft_plugin._replica.train import train

    def run(name, plugins, **keys):
        cfg = get_config(str(tmp_path / name), num_epoch=1, rec="synthetic:16x4", num_classes=16, num_image=64,
                         batch_size=8, margin_list=(1.0, 0.0, 0.4), sample_rate=0.5, **keys)
        return train(cfg, plugins=plugins).losses

    upstream = run("upstream", [], interclass_filtering_threshold=0.1)
    plugin = run("plugin", [craft_plugin.plugin], interclass_filtering_threshold=0.1, preset="cosface")
    unfiltered = run("unfiltered", [craft_plugin.plugin], preset="cosface")
    assert len(upstream) == 8 and plugin == upstream
    assert not torch.allclose(torch.tensor(unfiltered), torch.tensor(upstream), rtol=1e-3, atol=0)
