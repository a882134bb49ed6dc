"""AdaFace, MagFace and CurricularFace: values over several steps against the papers' formulas
written here (moving averages included), float64 gradchecks (MagFace through the feature norms),
the norm-aware Partial FC on 1 and 2 gloo ranks with -1 rows and sampling (every row's statistics,
margin and logits equal an unsharded computation of the same global batch), bf16 autocast,
checkpointed state (interrupted + resumed == uninterrupted), config errors, presets."""
from __future__ import annotations

import io
import json
import math
import statistics

import pytest
import torch
import torch.nn.functional as F

import craft_plugin.plugin
from craft_plugin.distributed import rank_and_world_size
from craft_plugin.errors import ConfigError
from craft_plugin.losses import build_margin_loss, default_parameters
from craft_plugin.losses.norm_aware_pfc import norm_aware_partial_fc
from craft_plugin.partial_fc.lean import lean_partial_fc
from craft_plugin._replica.config import get_config
from craft_plugin._replica.launch import run_distributed
from craft_plugin._replica.partial_fc import PartialFC_V2
from craft_plugin._replica.train import train as train_replica
from replica_helpers import sampled_norm_aware_step

NAMES = ["adaface", "curricularface", "magface"]
LABELS = torch.tensor([[2], [-1], [0], [4], [-1], [2]])


def cosines(seed, rows=6, cols=5):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(rows, cols, generator=gen, dtype=torch.float64) * 1.9 - 0.95


def feature_norms(seed, rows=6, low=12.0, high=100.0):
    gen = torch.Generator().manual_seed(100 + seed)
    return torch.rand(rows, 1, generator=gen, dtype=torch.float64) * (high - low) + low


class AdaFaceFormula:
    """arXiv 2204.00964 eq. (6)-(8) with the official head's clip, eps and moving averages."""

    def __init__(self, s=64.0, m=0.4, h=0.333, t_alpha=0.01):
        self.s, self.m, self.h, self.alpha = s, m, h, t_alpha
        self.mu, self.sigma = 20.0, 100.0

    def __call__(self, cos, labels, norms, all_targets=None):
        safe = [min(max(float(n), 0.001), 100.0) for n in norms.view(-1)]
        self.mu = self.alpha * statistics.fmean(safe) + (1 - self.alpha) * self.mu
        self.sigma = self.alpha * statistics.stdev(safe) + (1 - self.alpha) * self.sigma
        out = cos.clone()
        for i, y in enumerate(labels.view(-1).tolist()):
            if y < 0:
                continue
            z = min(max(self.h * (safe[i] - self.mu) / (self.sigma + 1e-3), -1.0), 1.0)
            theta = math.acos(min(max(float(cos[i, y]), -1 + 1e-3), 1 - 1e-3))
            angle = min(max(theta - self.m * z, 1e-3), math.pi - 1e-3)
            out[i, y] = math.cos(angle) - (self.m * z + self.m)
        return out * self.s

    def state(self):
        return [self.mu, self.sigma]


class MagFaceFormula:
    """arXiv 2103.06627 eq. (4)-(5) with the released code's easy margin; ``regulariser`` is lambda_g mean g."""

    def __init__(self, s=64.0, l_a=10.0, u_a=110.0, l_m=0.45, u_m=0.8, lambda_g=35.0):
        self.s, self.l_a, self.u_a, self.l_m, self.u_m, self.lambda_g = s, l_a, u_a, l_m, u_m, lambda_g

    def magnitude(self, n):
        return min(max(float(n), self.l_a), self.u_a)

    def __call__(self, cos, labels, norms, all_targets=None):
        out = cos.clone()
        for i, y in enumerate(labels.view(-1).tolist()):
            if y < 0:
                continue
            a = self.magnitude(norms[i])
            m = (self.u_m - self.l_m) / (self.u_a - self.l_a) * (a - self.l_a) + self.l_m
            c = float(cos[i, y])
            out[i, y] = math.cos(math.acos(c) + m) if c > 0 else c
        return out * self.s

    def regulariser(self, norms):
        return self.lambda_g * statistics.fmean(1 / self.magnitude(n) + self.magnitude(n) / self.u_a ** 2 for n in norms.view(-1))

    def state(self):
        return []


class CurricularFormula:
    """arXiv 2004.00288 eq. (9)-(10) with t's moving average; ``all_targets`` every row's cos theta_y."""

    def __init__(self, s=64.0, m=0.5, alpha=0.01):
        self.s, self.m, self.alpha, self.t = s, m, alpha, 0.0

    def __call__(self, cos, labels, norms, all_targets=None):
        flat = labels.view(-1).tolist()
        targets = all_targets if all_targets is not None else [float(cos[i, y]) for i, y in enumerate(flat)]
        self.t = self.alpha * statistics.fmean(targets) + (1 - self.alpha) * self.t
        out = cos.clone()
        for i, target in enumerate(targets):
            theta = math.acos(target)
            for j in range(cos.size(1)):
                c = float(cos[i, j])
                if j == flat[i]:
                    out[i, j] = math.cos(theta + self.m) if theta + self.m <= math.pi else c - self.m * math.sin(math.pi - self.m)
                elif c > math.cos(theta + self.m):
                    out[i, j] = c * (self.t + c)
        return out * self.s

    def state(self):
        return [self.t]


FORMULAS = {"adaface": AdaFaceFormula, "magface": MagFaceFormula, "curricularface": CurricularFormula}


def loss_state(loss):
    return [float(v) for v in loss.extra_state().values()]


@pytest.mark.parametrize("name", NAMES)
def test_values_over_steps_match_the_formula(name):
    """Three steps: the logits and the moving averages follow the formulas written above. For
    CurricularFace every row has its target here (the formula needs them all)."""
    loss, formula = build_margin_loss(name), FORMULAS[name]()
    labels = torch.tensor([[2], [1], [0], [4], [3], [2]]) if name == "curricularface" else LABELS
    for step in range(3):
        cos, norms = cosines(step), feature_norms(step, low=1.0, high=120.0)
        got = loss(cos.clone(), labels.clone(), norms)
        assert got.dtype == torch.float64
        assert torch.allclose(got, formula(cos, labels, norms), atol=1e-4), step
        assert loss_state(loss) == pytest.approx(formula.state(), rel=1e-6)


def test_adaface_margin_follows_the_norm():
    """z_hat = 1 (high norm, high quality): additive margin 2m and the angle reduced by m (CosFace-like);
    z_hat = -1: angular margin m, no additive one (ArcFace-like)."""
    loss = build_margin_loss({"name": "adaface", "s": 1.0, "t_alpha": 1.0})
    cos = torch.full((4, 2), 0.5, dtype=torch.float64)
    labels = torch.tensor([[0], [0], [0], [0]])
    norms = torch.tensor([[5.0], [10.0], [30.0], [60.0]], dtype=torch.float64)
    out = loss(cos.clone(), labels, norms)[:, 0]
    assert (out[1:] < out[:-1]).all()  # larger norm: smaller target logit at this cosine
    mu, sigma = norms.mean(), norms.std()
    z = (0.333 * (norms.view(-1) - mu) / (sigma + 1e-3)).clamp(-1, 1)
    want = torch.cos(math.acos(0.5) - 0.4 * z) - 0.4 * z - 0.4
    assert torch.allclose(out, want, atol=1e-6)


@pytest.mark.parametrize("easy_margin", [True, False])
def test_magface_margin_branches(easy_margin):
    loss = build_margin_loss({"name": "magface", "s": 1.0, "easy_margin": easy_margin})
    cos = torch.tensor([[-0.3, 0.1], [-0.999, 0.2], [0.6, 0.0]], dtype=torch.float64)
    norms = torch.tensor([[10.0], [110.0], [60.0]], dtype=torch.float64)  # margins 0.45, 0.8, 0.625
    out = loss(cos.clone(), torch.tensor([[0], [0], [0]]), norms)[:, 0]
    if easy_margin:
        want = [-0.3, -0.999, math.cos(math.acos(0.6) + 0.625)]
    else:
        want = [math.cos(math.acos(-0.3) + 0.45), -0.999 - 0.8 * math.sin(math.pi - 0.8), math.cos(math.acos(0.6) + 0.625)]
    assert out.tolist() == pytest.approx(want, abs=1e-9)


def test_magface_loss_through_partial_fc_with_sampling():
    """Cross-entropy of the margin logits plus lambda_g mean g(a) over the batch; -1 rows none here
    (one rank), sampled class centres."""
    spec = {"name": "magface", "s": 8.0}  # CE far from Partial FC's clamp of the target probability at 1e-30
    got, pfc, cos, remapped, norms = sampled_norm_aware_step(spec, seed=3, spread=20)
    formula = MagFaceFormula(s=8.0)
    want = F.cross_entropy(formula(cos, remapped.view(-1, 1), norms), remapped) + formula.regulariser(norms)
    assert got.item() == pytest.approx(want.item(), rel=1e-9)
    assert list(pfc.state_dict()) == ["weight"]


def test_curricular_hard_negatives_and_fallback():
    loss = build_margin_loss({"name": "curricularface", "s": 1.0, "alpha": 1.0})
    cos = torch.tensor([[0.5, 0.6, 0.1, -0.2], [-0.95, 0.3, -0.97, -0.99]], dtype=torch.float64)
    labels = torch.tensor([[0], [0]])
    out = loss(cos.clone(), labels)
    t = (0.5 - 0.95) / 2
    threshold0 = math.cos(math.acos(0.5) + 0.5)
    assert out[0, 0].item() == pytest.approx(threshold0)
    assert out[0, 1].item() == pytest.approx(0.6 * (t + 0.6))  # hard: above cos(theta_y + m)
    assert out[0, 2].item() == pytest.approx(0.1 * (t + 0.1)) and 0.1 > threshold0
    assert out[0, 3].item() == pytest.approx(-0.2)  # easy: unchanged
    assert out[1, 0].item() == pytest.approx(-0.95 - 0.5 * math.sin(math.pi - 0.5))  # theta_y + m > pi
    threshold1 = math.cos(math.acos(-0.95) + 0.5)
    for j in (1, 2, 3):
        c = cos[1, j].item()
        assert out[1, j].item() == pytest.approx(c * (t + c) if c > threshold1 else c)
    assert loss.t.item() == pytest.approx(t)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64(name):
    """Against finite differences, a fresh loss per evaluation. The moving averages and
    CurricularFace's thresholds carry no gradient (as the official heads): AdaFace's norms are
    held fixed, CurricularFace's t starts at 0.3 and moves by alpha = 1e-9, so that finite
    differences see none either. MagFace: through the cosines, the margin m(a) and the regulariser."""
    cos = cosines(7).requires_grad_(True)
    norms = feature_norms(7).requires_grad_(name == "magface")
    weights = torch.randn(6, 5, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    spec = {"name": "curricularface", "alpha": 1e-9} if name == "curricularface" else {"name": name}

    def fn(c, n):
        loss = build_margin_loss(spec)
        if name == "curricularface":
            loss.load_extra_state({"t": torch.tensor(0.3)})
        out = loss(c * 1.0, LABELS.clone(), n)
        return (out * weights).sum() + loss.total_loss(torch.zeros((), dtype=torch.float64), n, 1)

    assert torch.autograd.gradcheck(fn, (cos, norms), atol=1e-6, rtol=1e-5)
    if name == "magface":
        assert (torch.autograd.grad(fn(cos, norms), norms)[0] != 0).all()
    else:  # AdaFace detaches the norms (official head); CurricularFace does not use them
        probe = norms.detach().clone().requires_grad_(True)
        assert torch.autograd.grad(fn(cos, probe), probe, allow_unused=True)[0] is None


def test_magface_gradcheck_to_the_embeddings():
    """The norm-aware Partial FC's path (normalised cosines, feature norms with gradient, margin,
    cross-entropy, regulariser) as one function of the embeddings: the gradient reaches them
    through the cosines, the norm-dependent margin and the regulariser. (Partial FC's own
    cross-entropy works in place, as upstream's, and cannot be differentiated twice.)"""
    gen = torch.Generator().manual_seed(5)
    embeddings = (torch.randn(5, 4, generator=gen, dtype=torch.float64) * 15).requires_grad_(True)
    labels = torch.tensor([1, 0, 3, 5, 1])
    weight = torch.randn(6, 4, generator=gen, dtype=torch.float64)

    def fn(x):
        loss = build_margin_loss({"name": "magface", "s": 8.0})
        cos = F.linear(F.normalize(x), F.normalize(weight)).clamp(-1, 1)
        norms = x.norm(dim=1, keepdim=True)
        return loss.total_loss(F.cross_entropy(loss(cos, labels.view(-1, 1), norms), labels), norms, 1)

    assert torch.autograd.gradcheck(fn, (embeddings,), atol=1e-6, rtol=1e-5)


SHARD_SPECS = [{"name": "adaface", "t_alpha": 0.5}, {"name": "magface"}, {"name": "curricularface", "alpha": 0.5}]
GLOBAL_BATCH, DIM, CLASSES, STEPS = 8, 6, 9, 3


def shard_data(step):
    gen = torch.Generator().manual_seed(20 + step)
    embeddings = torch.randn(GLOBAL_BATCH, DIM, generator=gen, dtype=torch.float64) * (5 + 10 * step)
    labels = torch.randint(0, CLASSES, (GLOBAL_BATCH,), generator=gen)
    return embeddings, labels


def shard_run(sample_rate):
    """For each spec, STEPS steps of the norm-aware Partial FC in this process (one rank of
    ``world`` or the whole batch): per step the logits the loss produced with their global class
    ids, loss, gradients, and the loss's state."""
    rank, world = rank_and_world_size()
    rows = GLOBAL_BATCH // world
    weight = torch.randn(CLASSES, DIM, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = []
    for spec in SHARD_SPECS:
        loss_fn = build_margin_loss(spec)
        seen = []
        loss_fn.register_forward_hook(lambda module, args, output: seen.append(output.detach().clone()))
        torch.manual_seed(rank)
        pfc = norm_aware_partial_fc(PartialFC_V2)(loss_fn, DIM, CLASSES, sample_rate).double()
        with torch.no_grad():
            pfc.weight.copy_(weight[pfc.class_start:pfc.class_start + pfc.num_local])
        steps = []
        for step in range(STEPS):
            embeddings, labels = shard_data(step)
            local = embeddings[rank * rows:(rank + 1) * rows].clone().requires_grad_(True)
            pfc.weight.grad = None
            loss = pfc(local, labels[rank * rows:(rank + 1) * rows].clone())
            loss.backward()
            local_cols = pfc.weight_index if sample_rate < 1 else torch.arange(pfc.num_local)
            steps.append({"logits": seen[-1], "classes": local_cols + pfc.class_start, "loss": loss.item(),
                          "grad": local.grad.clone(), "state": loss_fn.extra_state()})
        out.append(steps)
    return out


@pytest.mark.parametrize("sample_rate", [1.0, 0.5])
def test_two_ranks_equal_the_unsharded_computation(sample_rate):
    """Rows whose class lives on the other rank (-1 here) get the margin, statistics and logits of
    the unsharded step; the state is bit-identical on both ranks."""
    full = shard_run(1.0)
    ranks = run_distributed(shard_run, 2, sample_rate)
    for i, spec in enumerate(SHARD_SPECS):
        for step in range(STEPS):
            ref = full[i][step]
            for rank in range(2):
                got = ranks[rank][i][step]
                assert torch.allclose(got["logits"], ref["logits"][:, got["classes"]], rtol=0, atol=1e-10), (spec, step)
                for key in ref["state"]:
                    assert torch.equal(got["state"][key], ranks[0][i][step]["state"][key])
                    assert torch.allclose(got["state"][key].double(), ref["state"][key].double(), rtol=1e-6, atol=0)
            if sample_rate == 1.0:
                assert ranks[0][i][step]["loss"] == pytest.approx(ref["loss"], rel=1e-9)
                assert ranks[1][i][step]["loss"] == ranks[0][i][step]["loss"]
                grad = torch.cat([ranks[r][i][step]["grad"] for r in range(2)]) / 2  # x world size, as DDP averages
                assert torch.allclose(grad, ref["grad"], atol=1e-9), (spec, step)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_on_cpu(name):
    """Partial FC with fp16=True (bfloat16 autocast on the CPU): float32 loss, finite gradients,
    the loss of the float32 run within bfloat16's precision, the same state update."""
    embeddings = torch.randn(8, 16, generator=torch.Generator().manual_seed(4)) * 20
    labels = torch.tensor([0, 3, 5, 3, 1, 6, 2, 0])
    losses, grads, states = [], [], []
    for fp16 in (False, True):
        torch.manual_seed(0)
        loss_fn = build_margin_loss(name)
        pfc = norm_aware_partial_fc(PartialFC_V2)(loss_fn, 16, 7, 1.0, fp16)
        x = embeddings.clone().requires_grad_(True)
        loss = pfc(x, labels.clone())
        loss.backward()
        assert loss.dtype == torch.float32 and torch.isfinite(x.grad).all() and torch.isfinite(pfc.weight.grad).all()
        losses.append(loss.item())
        grads.append(x.grad)
        states.append(loss_state(loss_fn))
    assert losses[1] == pytest.approx(losses[0], rel=0.05)
    assert F.cosine_similarity(grads[0].flatten(), grads[1].flatten(), dim=0) > 0.95
    assert states[1] == pytest.approx(states[0], rel=0.02)


def train(name, steps, resume_at=None, restore=True):
    """A linear backbone + norm-aware Partial FC trained with SGD; with ``resume_at``, everything is
    saved there (torch.save / weights_only torch.load), rebuilt from scratch and reloaded."""
    def build():
        torch.manual_seed(0)
        backbone = torch.nn.Linear(12, 6).double()
        pfc = norm_aware_partial_fc(PartialFC_V2)(build_margin_loss(name), 6, 9, 1.0).double()
        optimizer = torch.optim.SGD([*backbone.parameters(), *pfc.parameters()], lr=0.5, momentum=0.9)
        return backbone, pfc, optimizer

    backbone, pfc, optimizer = build()
    for step in range(steps):
        if step == resume_at:
            buffer = io.BytesIO()
            torch.save({"backbone": backbone.state_dict(), "fc": pfc.state_dict(), "opt": optimizer.state_dict(),
                        "loss": pfc.margin_softmax.extra_state()}, buffer)
            buffer.seek(0)
            saved = torch.load(buffer, weights_only=True)
            backbone, pfc, optimizer = build()
            backbone.load_state_dict(saved["backbone"])
            pfc.load_state_dict(saved["fc"])
            optimizer.load_state_dict(saved["opt"])
            if restore:
                pfc.margin_softmax.load_extra_state(saved["loss"])
        gen = torch.Generator().manual_seed(step)
        images = torch.randn(8, 12, generator=gen, dtype=torch.float64) * 4
        labels = torch.randint(0, 9, (8,), generator=gen)
        optimizer.zero_grad()
        pfc(backbone(images), labels).backward()
        optimizer.step()
    return [p.detach().clone() for p in (*backbone.parameters(), *pfc.parameters())], pfc.margin_softmax.extra_state()


@pytest.mark.parametrize("name", ["adaface", "curricularface"])
def test_interrupted_and_resumed_equals_uninterrupted(name):
    params, state = train(name, 6)
    resumed_params, resumed_state = train(name, 6, resume_at=3)
    assert all(torch.equal(a, b) for a, b in zip(params, resumed_params))
    assert state.keys() == resumed_state.keys() and all(torch.equal(state[k], resumed_state[k]) for k in state)
    lost_params, lost_state = train(name, 6, resume_at=3, restore=False)  # the state matters
    assert not all(torch.equal(state[k], lost_state[k]) for k in state)
    assert not all(torch.equal(a, b) for a, b in zip(params, lost_params))


@pytest.mark.parametrize("spec", [{"name": "adaface", "t_alpha": 0.5}, {"name": "magface"},
                                  {"name": "curricularface", "alpha": 0.5}], ids=lambda spec: spec["name"])
def test_through_the_lean_partial_fc_over_steps(spec):
    """The chunked Partial FC equals the materialised one step after step (the averages move;
    MagFace's margins take the norms' gradient, CurricularFace's thresholds come before any chunk)."""
    results = []
    for cls in (lean_partial_fc(PartialFC_V2, 4), norm_aware_partial_fc(PartialFC_V2)):
        torch.manual_seed(0)
        loss_fn = build_margin_loss(spec)
        pfc = cls(loss_fn, DIM, CLASSES, 1.0).double()
        with torch.no_grad():
            pfc.weight.copy_(torch.randn(CLASSES, DIM, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
        steps = []
        for step in range(STEPS):
            embeddings, labels = shard_data(step)
            x = embeddings.clone().requires_grad_(True)
            pfc.weight.grad = None
            loss = pfc(x, labels)
            loss.backward()
            steps.append((loss.detach(), x.grad, pfc.weight.grad.clone(), loss_fn.extra_state()))
        results.append(steps)
    for (lean, plain) in zip(*results):
        assert torch.allclose(lean[0], plain[0], rtol=1e-10) and torch.allclose(lean[1], plain[1], atol=1e-10)
        assert torch.allclose(lean[2], plain[2], atol=1e-10)
        # CurricularFace's t: from B dot products on the chunked path, the GEMM's entries otherwise
        assert all(torch.allclose(lean[3][k], plain[3][k], rtol=1e-12, atol=0) for k in plain[3])


def test_replica_training_resume_is_exact(tmp_path, preset="adaface"):
    """The arcface_torch replica with the plugin and preset adaface: the averages go into the
    checkpoint (readable with weights_only=True) and a run stopped after epoch 1 and resumed
    continues exactly (CurricularFace's t: test_interrupted_and_resumed_equals_uninterrupted)."""
    def cfg(path, **kw):
        return get_config(str(path), num_epoch=2, rec="synthetic:16x4", num_classes=16, num_image=64,
                          batch_size=8, save_all_states=True, num_workers=1, preset=preset, **kw)
    whole = train_replica(cfg(tmp_path / "a"), plugins=[craft_plugin.plugin])
    saved = torch.load(tmp_path / "a" / "checkpoint_gpu_0.pt", weights_only=True)["craft_plugin"]["margin_loss"]
    assert saved.keys() == whole.partial_fc.margin_softmax.extra_state().keys()
    train_replica(cfg(tmp_path / "b", stop_after_epoch=1), plugins=[craft_plugin.plugin])
    resumed = train_replica(cfg(tmp_path / "b", resume=True), plugins=[craft_plugin.plugin])
    assert resumed.losses == whole.losses[-len(resumed.losses):]
    state = resumed.partial_fc.margin_softmax.extra_state()
    assert all(torch.equal(state[k], whole.partial_fc.margin_softmax.extra_state()[k]) for k in state)


def test_state_is_outside_partial_fc_state_dict_and_follows_the_module():
    """Partial FC's state_dict keys stay upstream's; the averages move with the module (.cuda() in
    a real run), here .double()."""
    for name in ("adaface", "curricularface"):
        loss = build_margin_loss(name)
        pfc = norm_aware_partial_fc(PartialFC_V2)(loss, 4, 6, 1.0)
        assert list(pfc.state_dict()) == ["weight"]
        assert all(v.dtype == torch.float32 for v in loss.extra_state().values())
        pfc.double()
        assert all(v.dtype == torch.float64 for v in loss.extra_state().values())


def test_norm_losses_refuse_to_run_without_norms():
    for name in ("adaface", "magface"):
        with pytest.raises(RuntimeError, match="norm-aware Partial FC"):
            build_margin_loss(name)(cosines(0), LABELS.clone())


@pytest.mark.parametrize("name", NAMES)
def test_numerics_at_the_edges(name):
    loss = build_margin_loss(name)
    cos = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.999], [0.2, -0.9999, 1.0]], requires_grad=True)
    labels = torch.tensor([[0], [0], [1]])
    norms = torch.tensor([[0.0], [150.0], [30.0]], requires_grad=True)
    out = loss(cos.clone(), labels, norms)
    (out.sum() + loss.total_loss(out.sum() * 0, norms, 1)).backward()
    assert torch.isfinite(out).all() and torch.isfinite(cos.grad).all()
    assert norms.grad is None or torch.isfinite(norms.grad).all()
    half = loss(cos.detach().half().clone(), labels, norms.detach().half())
    assert half.dtype == torch.float32


@pytest.mark.parametrize("spec,key", [
    ({"name": "adaface", "t_alpha": 0.0}, "margin_loss.t_alpha"), ({"name": "adaface", "h": -1}, "margin_loss.h"),
    ({"name": "adaface", "m": "0.4"}, "margin_loss.m"), ({"name": "magface", "u_a": 5.0}, "margin_loss.u_a"),
    ({"name": "magface", "u_m": 0.2}, "margin_loss.u_m"), ({"name": "magface", "easy_margin": 1}, "margin_loss.easy_margin"),
    ({"name": "magface", "lambda_g": -1}, "margin_loss.lambda_g"), ({"name": "curricularface", "alpha": 1.5}, "margin_loss.alpha"),
    ({"name": "curricularface", "m": 2.0}, "margin_loss.m"), ({"name": "curricularface", "t": 0.1}, "margin_loss.t"),
])
def test_bad_specs_name_the_key(spec, key):
    with pytest.raises(ConfigError) as info:
        build_margin_loss(spec)
    assert info.value.key == key


def test_defaults_are_the_official_ones():
    ada, mag, cur = (build_margin_loss(n) for n in ("adaface", "magface", "curricularface"))
    assert (ada.s, ada.m, ada.h, ada.t_alpha) == (64.0, 0.4, 0.333, 0.01)
    assert (mag.s, mag.l_a, mag.u_a, mag.l_m, mag.u_m, mag.lambda_g, mag.easy_margin) == (64.0, 10.0, 110.0, 0.45, 0.8, 35.0, True)
    assert (cur.s, cur.m, cur.alpha) == (64.0, 0.5, 0.01)
    assert loss_state(ada) == [20.0, 100.0] and loss_state(cur) == [0.0]


def test_presets_list_them_with_sources(capsys):
    from craft_plugin.cli import main

    assert main(["presets", "--json"]) == 0
    presets = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["presets"]
    for name, paper in zip(NAMES, ("2204.00964", "2004.00288", "2103.06627")):
        for preset in (name, f"{name}+craft"):
            assert presets[preset]["values"]["margin_loss"] == {"name": name, **default_parameters(name)}
            assert paper in presets[preset]["source"] and "official" in presets[preset]["source"]
