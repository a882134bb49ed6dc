"""Margin losses: values and gradients against formulas written here, Partial FC contract
(-1 rows, sampling), numerics, config errors; sharded training equals full-FC training."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from craft_plugin.distributed import rank_and_world_size
from craft_plugin.errors import ConfigError
from craft_plugin.losses import MARGIN_LOSSES, build_margin_loss
from craft_plugin.losses.norm_aware_pfc import norm_aware_partial_fc
from craft_plugin._replica.launch import run_distributed
from craft_plugin._replica.partial_fc import PartialFC_V2
from replica_helpers import sampled_norm_aware_step

LABELS = torch.tensor([[2], [-1], [0], [4], [-1], [2]])


def cosines(seed=0, rows=6, cols=5):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(rows, cols, generator=gen, dtype=torch.float64) * 1.9 - 0.95)


def expected(name, cos, labels, params, norms=None):
    """Independent formulas (papers' notation), the whole matrix, float64."""
    out = cos.clone()
    s = params.get("s")
    for i, y in enumerate(labels.view(-1).tolist()):
        if y < 0:
            continue
        c = cos[i, y]
        theta = math.acos(float(c))
        m = params.get("m", 0.0)
        if name == "arcface" or name.startswith("elasticface-arc"):
            out[i, y] = math.cos(theta + m)
        elif name == "cosface" or name.startswith("elasticface-cos"):
            out[i, y] = c - m
        elif name == "sphereface-r":
            k = math.floor(m * theta / math.pi)
            out[i, y] = (-1) ** k * math.cos(m * theta) - 2 * k
    return out * s


FIXED = {  # sigma = 0 pins ElasticFace margins to m
    "arcface": {"s": 64.0, "m": 0.5}, "cosface": {"s": 64.0, "m": 0.4},
    "elasticface-arc": {"s": 64.0, "m": 0.5, "sigma": 0.0}, "elasticface-arc-plus": {"s": 64.0, "m": 0.5, "sigma": 0.0},
    "elasticface-cos": {"s": 64.0, "m": 0.35, "sigma": 0.0}, "elasticface-cos-plus": {"s": 64.0, "m": 0.35, "sigma": 0.0},
    "sphereface-r": {"s": 30.0, "m": 1.7},
}


STATEFUL = ["adaface", "curricularface", "magface"]  # batch statistics: tests/test_losses_adaface_magface_curricular.py


def test_every_registered_loss_is_covered():
    assert sorted([*FIXED, *STATEFUL]) == MARGIN_LOSSES.names()


@pytest.mark.parametrize("name", sorted(FIXED))
def test_values_match_the_formula(name):
    cos = cosines()
    loss = build_margin_loss({"name": name, **FIXED[name]})
    got = loss(cos.clone(), LABELS.clone())
    assert torch.allclose(got.double(), expected(name, cos, LABELS, FIXED[name]), atol=1e-4)
    assert got.dtype == torch.float64  # fp16 becomes float32 (test_numerics_at_the_edges); float64 stays


@pytest.mark.parametrize("name", ["elasticface-arc", "elasticface-cos", "sphereface-r", "cosface"])
def test_gradcheck_where_differentiable(name):
    params = dict(FIXED[name], **({"detach": False} if name == "sphereface-r" else {}))
    loss = build_margin_loss({"name": name, **params})
    cos = cosines(1).requires_grad_(True)

    def fn(c):
        logits = c.clone()
        flat = LABELS.view(-1)
        rows = torch.nonzero(flat != -1).view(-1)
        logits[rows, flat[rows]] = loss.target_logit(c[rows, flat[rows]], rows, c.size(0))
        return logits * loss.s

    assert torch.autograd.gradcheck(fn, (cos,), atol=1e-5)


@pytest.mark.parametrize("name", ["arcface", "sphereface-r"])
def test_detached_margins_pass_the_gradient_of_cos(name):
    loss = build_margin_loss({"name": name, **FIXED[name]})
    cos = cosines(2).float().requires_grad_(True)
    weights = torch.randn(6, 5)
    (loss(cos.clone(), LABELS.clone()) * weights).sum().backward()
    assert torch.allclose(cos.grad, weights * loss.s)


def test_sphereface_r_magnitude_types_and_norm_modes():
    cos = cosines(3)
    theta = torch.acos(cos)
    v1 = build_margin_loss({"name": "sphereface-r", "magnitude": "v1", "s": 1.0, "m": 3.0})(cos.clone(), LABELS.clone())
    v2 = build_margin_loss({"name": "sphereface-r", "magnitude": "v2", "s": 1.0, "m": 2.0})(cos.clone(), LABELS.clone())
    for i, y in enumerate(LABELS.view(-1).tolist()):
        for j in range(5):
            if j == y:
                assert v1[i, j] == pytest.approx(math.cos(min(3.0 * theta[i, j].item(), math.pi)), abs=1e-5)
                assert v2[i, j] == pytest.approx(cos[i, j].item(), abs=1e-6)
            else:
                assert v1[i, j] == pytest.approx(cos[i, j].item(), abs=1e-6)
                assert v2[i, j] == pytest.approx(math.cos(theta[i, j].item() / 2.0), abs=1e-5)
    norms = torch.full((6, 1), 7.0, dtype=torch.float64)
    none = build_margin_loss({"name": "sphereface-r", "norm": "none", "s": 30.0})
    assert torch.allclose(none(cos.clone(), LABELS.clone(), norms).double(),
                          expected("sphereface-r", cos, LABELS, {"s": 7.0, "m": 1.5}), atol=1e-4)
    with pytest.raises(RuntimeError, match="norm-aware Partial FC"):
        none(cos.clone(), LABELS.clone())


def test_margin_schedule_counts_steps():
    loss = build_margin_loss({"name": "sphereface-r", "m": 1.0, "dm": 0.25, "steps": [2, 4]})
    seen = []
    for _ in range(6):
        seen.append(loss.current_m())
        loss.on_step()
    assert seen == [1.0, 1.0, 1.0, 1.25, 1.25, 1.5]


def test_elastic_margins_are_normal_draws_per_global_row_and_seeded():
    loss = build_margin_loss({"name": "elasticface-cos", "s": 1.0, "m": 0.35, "sigma": 0.05, "seed": 9})
    cos = cosines(4)
    got = loss(cos.clone(), LABELS.clone())
    draws = torch.normal(0.35, 0.05, (6,), generator=torch.Generator().manual_seed(9))
    for i, y in enumerate(LABELS.view(-1).tolist()):
        if y >= 0:
            assert got[i, y].item() == pytest.approx(cos[i, y].item() - draws[i].item(), abs=1e-6)


@pytest.mark.parametrize("name", ["elasticface-arc", "elasticface-cos-plus"])
def test_elastic_generator_state_restores_before_and_after_first_use(name):
    """A resumed loss draws what the uninterrupted one draws, whether its generator already exists
    (state set in place) or is made later on the logits' device (state kept until then)."""
    spec = {"name": name, "s": 1.0, "sigma": 0.1, "seed": 3}
    whole = build_margin_loss(spec)
    assert whole.extra_state() == {"generator": None}  # nothing drawn: the seed is the state
    first = whole(cosines(4), LABELS.clone())
    saved = whole.extra_state()
    assert whole.generator.device == first.device
    expected = whole(cosines(4), LABELS.clone())
    fresh = build_margin_loss(spec)
    fresh.load_extra_state(saved)
    assert torch.equal(fresh.extra_state()["generator"], saved["generator"])
    assert torch.equal(fresh(cosines(4), LABELS.clone()), expected)
    used = build_margin_loss(spec)
    used(cosines(4), LABELS.clone())
    used(cosines(4), LABELS.clone())
    used.load_extra_state(saved)
    assert torch.equal(used(cosines(4), LABELS.clone()), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the host-device sync check needs a GPU")
@pytest.mark.parametrize("name", ["elasticface-arc", "elasticface-cos-plus"])
def test_elastic_margins_make_no_host_device_sync(name):
    loss = build_margin_loss({"name": name, "seed": 2})
    rows = torch.tensor([0, 2, 3, 5])
    target = cosines(4).float()[rows, LABELS.view(-1)[rows]].cuda()
    rows = rows.cuda()
    loss.margins(target, rows, 6)  # the generator is made here (its seeding may sync, once)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        margins = loss.margins(target, rows, 6)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert margins.device == target.device and loss.generator.device == target.device


@pytest.mark.parametrize("name", ["elasticface-arc-plus", "elasticface-cos-plus"])
def test_plus_gives_harder_samples_larger_margins(name):
    loss = build_margin_loss({"name": name, "s": 1.0, "sigma": 0.1, "seed": 1})
    labels = torch.arange(8).view(-1, 1)
    labels[3] = -1
    cos = torch.linspace(-0.6, 0.9, 64).view(8, 8)[torch.randperm(8, generator=torch.Generator().manual_seed(0))]
    cos = cos.double()
    out = loss(cos.clone(), labels.clone())
    rows = [i for i in range(8) if labels[i, 0] >= 0]
    target = torch.tensor([cos[i, labels[i, 0]].item() for i in rows])
    if "arc" in name:
        margins = torch.tensor([math.acos(out[i, labels[i, 0]].item()) - math.acos(cos[i, labels[i, 0]].item()) for i in rows])
    else:
        margins = torch.tensor([cos[i, labels[i, 0]].item() - out[i, labels[i, 0]].item() for i in rows])
    order = target.argsort()
    assert (margins[order][:-1] >= margins[order][1:] - 1e-5).all()


@pytest.mark.parametrize("name", sorted(FIXED))
def test_numerics_at_the_edges(name):
    loss = build_margin_loss({"name": name, **FIXED[name], **({"m": 3.0} if name == "sphereface-r" else {})})
    cos = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.999], [0.2, -0.9999, 1.0]], requires_grad=True)
    labels = torch.tensor([[0], [0], [1]])
    out = loss(cos.clone(), labels)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(cos.grad).all()
    empty = loss(cos.detach().clone(), torch.full((3, 1), -1))
    assert torch.allclose(empty, cos.detach() * loss.s)
    half = loss(cos.detach().half().clone(), labels)
    assert half.dtype == torch.float32


@pytest.mark.parametrize("spec,key", [
    ("nope", "margin_loss"), ({"name": "arcface", "scale": 3}, "margin_loss.scale"),
    ({"name": "elasticface-arc", "sigma": -0.1}, "margin_loss.sigma"), ({"name": "cosface", "s": 0}, "margin_loss.s"),
    ({"name": "arcface", "m": 4.0}, "margin_loss.m"), ({"name": "sphereface-r", "m": 0.5}, "margin_loss.m"),
    ({"name": "sphereface-r", "magnitude": "v3"}, "margin_loss.magnitude"),
    ({"name": "sphereface-r", "norm": "soft2"}, "margin_loss.norm"), ({"s": 3}, "margin_loss"),
])
def test_bad_specs_name_the_key(spec, key):
    with pytest.raises(ConfigError) as info:
        build_margin_loss(spec)
    assert info.value.key == key


SHARDED_SPECS = [
    {"name": "arcface"}, {"name": "elasticface-arc", "seed": 4}, {"name": "elasticface-cos-plus", "seed": 5},
    {"name": "elasticface-arc-plus", "seed": 6}, {"name": "sphereface-r", "norm": "hard"},
    {"name": "sphereface-r", "norm": "soft", "magnitude": "v1"}, {"name": "sphereface-r", "norm": "none", "magnitude": "v2", "lw": 1.0},
]


def pfc_losses_and_grads(embeddings, labels, weight, sample_rate=1.0):
    """For each spec: loss and gradients through the norm-aware Partial FC in this process."""
    rank, world = rank_and_world_size()
    rows = embeddings.size(0) // world
    out = []
    for spec in SHARDED_SPECS:
        loss_fn = build_margin_loss(spec)
        torch.manual_seed(0)
        pfc = norm_aware_partial_fc(PartialFC_V2)(loss_fn, weight.size(1), weight.size(0), sample_rate).double()
        with torch.no_grad():
            pfc.weight.copy_(weight[pfc.class_start:pfc.class_start + pfc.num_local])
        local = embeddings[rank * rows:(rank + 1) * rows].clone().requires_grad_(True)
        loss = pfc(local, labels[rank * rows:(rank + 1) * rows].clone())
        loss.backward()
        out.append((loss.item(), local.grad.clone(), pfc.weight.grad.clone()))
    return out


def test_sharded_losses_equal_single_process_full_fc():
    gen = torch.Generator().manual_seed(11)
    embeddings = torch.randn(8, 6, generator=gen, dtype=torch.float64) * 3
    labels = torch.tensor([0, 6, 1, 5, 2, 2, 4, 3])
    weight = torch.randn(7, 6, generator=gen, dtype=torch.float64)
    full = pfc_losses_and_grads(embeddings, labels, weight)
    sharded = run_distributed(pfc_losses_and_grads, 2, embeddings, labels, weight)
    for i, spec in enumerate(SHARDED_SPECS):
        ref_loss, ref_emb, ref_w = full[i]
        for rank in range(2):
            assert sharded[rank][i][0] == pytest.approx(ref_loss, rel=1e-6), spec
        emb_grad = torch.cat([sharded[r][i][1] for r in range(2)]) / 2  # per-rank grads carry the world size
        assert torch.allclose(emb_grad, ref_emb, atol=1e-6), spec
        assert torch.allclose(torch.cat([sharded[r][i][2] for r in range(2)]), ref_w, atol=1e-6), spec


@pytest.mark.parametrize("norm", ["none", "soft"])
def test_feature_norm_losses_under_mixed_precision(norm):
    """Partial FC with fp16=True (bfloat16 autocast on the CPU): float32 logits, finite gradients,
    and the loss of the float32 run within bfloat16's precision."""
    spec = {"name": "sphereface-r", "norm": norm, "lw": 1.0}
    embeddings = torch.randn(8, 16, generator=torch.Generator().manual_seed(4)) * 5
    labels = torch.tensor([0, 3, 5, 3, 1, 6, 2, 0])
    losses, grads = [], []
    for fp16 in (False, True):
        torch.manual_seed(0)
        pfc = norm_aware_partial_fc(PartialFC_V2)(build_margin_loss(spec), 16, 7, 1.0, fp16)
        x = embeddings.clone().requires_grad_(True)
        loss = pfc(x, labels.clone())
        loss.backward()
        assert loss.dtype == torch.float32 and torch.isfinite(x.grad).all() and torch.isfinite(pfc.weight.grad).all()
        losses.append(loss.item())
        grads.append(x.grad)
    assert losses[1] == pytest.approx(losses[0], rel=0.05)
    assert torch.nn.functional.cosine_similarity(grads[0].flatten(), grads[1].flatten(), dim=0) > 0.95


def test_soft_loss_total_and_sampling():
    spec = {"name": "sphereface-r", "norm": "soft", "s": 3.0, "m": 1.5, "lw": 2.0, "t": 0.1}
    loss, pfc, cos, remapped, norms = sampled_norm_aware_step(spec, seed=12, spread=4)
    logits = expected("sphereface-r", cos, remapped.view(-1, 1), {"s": 1.0, "m": 1.5}) * norms.view(-1, 1)
    want = 2.0 * F.cross_entropy(logits, remapped) / 3.0 + 0.1 * (norms - 3.0).abs().mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    assert list(pfc.state_dict()) == ["weight"]


@pytest.mark.parametrize("spec", [
    {"name": "elasticface-arc", "sigma": 0.0}, {"name": "elasticface-cos-plus", "sigma": 0.0}, {"name": "cosface"},
    {"name": "sphereface-r", "detach": False, "m": 1.7}, {"name": "sphereface-r", "detach": False, "magnitude": "v2"},
    {"name": "sphereface-r", "norm": "none", "detach": False, "magnitude": "v1"},
])
def test_gradcheck_through_the_whole_loss(spec):
    loss = build_margin_loss(spec)
    cos = cosines(5).requires_grad_(True)
    norms = torch.full((6, 1), 2.5, dtype=torch.float64)
    weights = torch.randn(6, 5, dtype=torch.float64)

    def fn(c):
        return (loss(c * 1.0, LABELS.clone(), norms).double() * weights).sum()

    assert torch.autograd.gradcheck(fn, (cos,), atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("magnitude", ["v0", "v1"])
@pytest.mark.parametrize("norm", ["none", "soft"])
def test_gradcheck_with_feature_norm_scale(norm, magnitude):
    """The per-row (feature norm) scale: gradients to the cosines and to the norms."""
    loss = build_margin_loss({"name": "sphereface-r", "norm": norm, "magnitude": magnitude, "detach": False})
    cos = cosines(6).requires_grad_(True)
    norms = (torch.rand(6, 1, dtype=torch.float64) * 3 + 0.5).requires_grad_(True)
    weights = torch.randn(6, 5, dtype=torch.float64)

    def fn(c, n):
        return (loss(c * 1.0, LABELS.clone(), n) * weights).sum()

    assert torch.autograd.gradcheck(fn, (cos, norms), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("spec,node", [
    ({"name": "sphereface-r", "norm": "soft"}, "_RowScaledTargetMarginBackward"),
    ({"name": "sphereface-r", "norm": "none", "magnitude": "v1"}, "_RowScaledTargetMarginBackward"),
    ({"name": "sphereface-r"}, "_TargetMarginBackward"), ({"name": "elasticface-cos"}, "_TargetMarginBackward"),
])
def test_fused_paths_are_taken(spec, node):
    """Only the targets change and the matrix is scaled once: no plain-autograd fallback."""
    cos = cosines(8).requires_grad_(True)
    out = build_margin_loss(spec)(cos * 1.0, LABELS.clone(), torch.full((6, 1), 2.0, dtype=torch.float64))
    assert type(out.grad_fn).__name__ == node


def test_fused_path_refuses_an_elementwise_map_with_a_per_row_scale():
    from craft_plugin.losses.base import MarginLoss

    class Both(MarginLoss):
        def target_logit(self, cos, rows, batch):
            return cos

        def logit_map(self):
            return lambda logits: logits

        def scale_factor(self, norms):
            return norms

    with pytest.raises(NotImplementedError, match="Both: a per-row scale with a logit_map"):
        Both(1.0)(cosines(1), LABELS.clone(), torch.ones(6, 1, dtype=torch.float64))


def test_detached_feature_norm_path_equals_plain_autograd():
    """Fused path, detach=True: forward psi, straight-through cosine gradient, exact norm gradient."""
    spec = {"name": "sphereface-r", "norm": "soft", "m": 1.7}
    cos, norms = cosines(7), torch.rand(6, 1, dtype=torch.float64) * 3 + 0.5
    weights = torch.randn(6, 5, dtype=torch.float64)
    target = expected("sphereface-r", cos, LABELS, {"s": 1.0, "m": 1.7})

    c1, n1 = cos.clone().requires_grad_(True), norms.clone().requires_grad_(True)
    (build_margin_loss(spec)(c1 * 1.0, LABELS.clone(), n1) * weights).sum().backward()
    c2, n2 = cos.clone().requires_grad_(True), norms.clone().requires_grad_(True)
    reference = (c2 + (target - c2).detach()) * n2  # the characteristic detachment, written plainly
    (reference * weights).sum().backward()
    assert torch.allclose(c1.grad, c2.grad, atol=1e-12) and torch.allclose(n1.grad, n2.grad, atol=1e-12)


@pytest.mark.parametrize("name", sorted(FIXED))
def test_hard_normalisation_works_with_the_stock_partial_fc(name):
    gen = torch.Generator().manual_seed(13)
    embeddings = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    labels = torch.tensor([3, 1, 3, 0, 6, 2])
    weight = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    pfc = PartialFC_V2(build_margin_loss({"name": name, **FIXED[name]}), 5, 7).double()
    with torch.no_grad():
        pfc.weight.copy_(weight)
    loss = pfc(embeddings.clone(), labels.clone())
    cos = F.linear(F.normalize(embeddings), F.normalize(weight)).clamp(-1, 1)
    probs = F.softmax(expected(name, cos, labels.view(-1, 1), FIXED[name]), dim=1).gather(1, labels.view(-1, 1))
    want = -probs.clamp_min(1e-30).log().mean()  # Partial FC's cross-entropy floors p at 1e-30, as upstream
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
