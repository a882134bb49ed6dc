"""Lean (chunked) Partial FC, both modes (cosines recomputed in the backward, or kept from the
forward): loss and every gradient equal the materialised Partial FC step for every registered loss
(and SphereFace-R's variants), on 1 and 2 gloo ranks, with sampling, -1 rows and bf16 autocast;
the two modes agree bit for bit; ranks agree bit for bit; a replica training run matches step for
step."""
from __future__ import annotations

import pytest
import torch
from easydict import EasyDict

import craft_plugin.plugin
from craft_plugin.config import resolve_config
from craft_plugin.distributed import rank_and_world_size
from craft_plugin.errors import ConfigError
from craft_plugin.losses import MARGIN_LOSSES, build_margin_loss
from craft_plugin.losses.norm_aware_pfc import norm_aware_partial_fc
from craft_plugin.partial_fc import lean as lean_module
from craft_plugin.partial_fc.lean import DEFAULT_CHUNK, lean_partial_fc
from craft_plugin._replica.config import get_config
from craft_plugin._replica.launch import run_distributed
from craft_plugin._replica.partial_fc import PartialFC_V2
from craft_plugin._replica.train import train
from replica_helpers import state_of

SPHEREFACE_VARIANTS = [{"name": "sphereface-r", "magnitude": magnitude, "norm": norm, "detach": detach}
                       for magnitude in ("v1", "v2") for norm in ("hard", "none", "soft") for detach in (True, False)]
CHUNKABLE = [name for name in MARGIN_LOSSES.names() if build_margin_loss(name).chunkable()]
REFUSED = [name for name in MARGIN_LOSSES.names() if name not in CHUNKABLE]
SPECS = [{"name": name} for name in CHUNKABLE] + SPHEREFACE_VARIANTS
IDS = ["-".join(str(v) for v in spec.values()) for spec in SPECS]

BATCH, DIM, CLASSES, CHUNK = 12, 16, 50, 7  # CHUNK does not divide the shard: a ragged last chunk
MODES = {"recompute": True, "keep": False}  # config.partial_fc's "recompute"


def global_weight():
    return torch.randn(CLASSES, DIM, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def batch(dtype, world_size=1, rank=0):
    """This rank's rows of the global batch; two -1 rows. Embeddings lean towards their class centre
    (target cosines about 0.3-0.8) so that the targets compete and the margins shape the gradient."""
    gen = torch.Generator().manual_seed(1)
    y = torch.randint(0, CLASSES, (BATCH,), generator=gen)
    lean = torch.rand(BATCH, 1, generator=gen, dtype=torch.float64) * 0.8 + 0.3
    x = (lean * torch.nn.functional.normalize(global_weight()[y]) * DIM ** 0.5
         + torch.randn(BATCH, DIM, generator=gen, dtype=torch.float64)) * 3
    y[3] = y[8] = -1
    per = BATCH // world_size
    return x[rank * per:(rank + 1) * per].to(dtype), y[rank * per:(rank + 1) * per]


def step(lean, spec, dtype, sample_rate=1.0, fp16=False, world_size=1, rank=0, mode="recompute"):
    """One forward+backward: (loss, embedding gradient, weight gradient, the loss's state after)."""
    torch.manual_seed(0)
    cls = lean_partial_fc(PartialFC_V2, CHUNK, MODES[mode]) if lean else norm_aware_partial_fc(PartialFC_V2)
    margin = build_margin_loss(spec)
    pfc = cls(margin, DIM, CLASSES, sample_rate, fp16).to(dtype)
    with torch.no_grad():  # this rank's shard of one global classifier
        pfc.weight.copy_(global_weight()[pfc.class_start:pfc.class_start + pfc.num_local])
    x, y = batch(dtype, world_size, rank)
    x.requires_grad_(True)
    torch.manual_seed(5 + rank)  # the negatives sampled for sample_rate < 1
    loss = pfc(x, y.clone())
    loss.backward()
    return loss.detach(), x.grad, pfc.weight.grad, margin.extra_state()


def relative(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def assert_same_step(lean, plain, tol):
    for got, want, what in zip(lean[:3], plain[:3], ("loss", "embedding gradient", "weight gradient")):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert relative(got, want) <= tol, f"{what}: relative error {relative(got, want):.2e}"
    for key, value in plain[3].items():  # a stateful loss drew exactly once, like the materialised step
        got, want = torch.as_tensor(lean[3][key]), torch.as_tensor(value)
        if want.is_floating_point():  # CurricularFace's t: the chunked path's target cosines are B dot
            assert relative(got, want) <= tol, key  # products, the materialised one's GEMM entries
        else:  # generator states
            assert torch.equal(got, want), key


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sample_rate", [1.0, 0.3])
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_equals_the_materialised_step_float64(spec, sample_rate, mode):
    assert_same_step(step(True, spec, torch.float64, sample_rate, mode=mode),
                     step(False, spec, torch.float64, sample_rate), 1e-10)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_equals_the_materialised_step_float32(spec, mode):
    assert_same_step(step(True, spec, torch.float32, mode=mode), step(False, spec, torch.float32), 1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_bf16_autocast_on_cpu(spec, mode):
    # the GEMMs run in bfloat16 as in the materialised step; the embedding gradient is summed over
    # chunks in float32 instead of coming out of one bfloat16 GEMM: they differ by bfloat16 rounding
    # (2^-8 = 3.9e-3 relative)
    lean, plain = step(True, spec, torch.float32, fp16=True, mode=mode), step(False, spec, torch.float32, fp16=True)
    assert relative(lean[0], plain[0]) <= 1e-6 and relative(lean[2], plain[2]) <= 1e-5
    assert relative(lean[1], plain[1]) <= 1e-2


@pytest.mark.parametrize("fp16", [False, True], ids=["float32", "bf16-autocast"])
@pytest.mark.parametrize("spec", [{"name": "arcface"}, {"name": "curricularface"},
                                  {"name": "sphereface-r", "magnitude": "v2", "norm": "soft", "detach": False}], ids=str)
def test_the_two_modes_agree_bit_for_bit(spec, fp16):
    """The kept cosines are the recomputed ones (stored in the GEMM's dtype, nothing rounded)."""
    keep, recompute = (step(True, spec, torch.float32, 0.3, fp16, mode=mode) for mode in ("keep", "recompute"))
    for got, want in zip(keep[:3], recompute[:3]):
        assert torch.equal(got, want)


def test_keep_mode_frees_its_buffer_in_the_backward_and_refuses_a_second(monkeypatch):
    """The (B, C) buffer must not live on in the loss tensor's graph until the next step."""
    torch.manual_seed(0)
    pfc = lean_partial_fc(PartialFC_V2, CHUNK, False)(build_margin_loss("arcface"), DIM, CLASSES, 1.0, False)
    x, y = batch(torch.float32)
    loss = pfc(x.requires_grad_(True), y.clone())
    kept = loss.grad_fn.cosines
    assert kept.flat.shape == (BATCH * CLASSES,) and kept.flat.dtype == torch.float32
    loss.backward(retain_graph=True)
    assert loss.grad_fn.cosines is None
    with pytest.raises(RuntimeError, match="recompute"):
        loss.backward()
    monkeypatch.setattr(lean_module, "_Kept", None)  # an evaluation forward keeps nothing
    with torch.no_grad():
        pfc(x, y.clone())


def test_the_materialised_path_is_sensitive_to_the_margin():
    """The comparisons above would catch a chunked path that dropped the margin."""
    arc = step(False, {"name": "arcface"}, torch.float64)
    plain = step(False, {"name": "arcface", "m": 0.0}, torch.float64)
    assert relative(arc[0], plain[0]) > 1e-2 and relative(arc[1], plain[1]) > 1e-2


def two_rank_steps(specs, mode):
    rank, world_size = rank_and_world_size()
    out = []
    for spec in specs:
        for sample_rate in (1.0, 0.3):
            out.append([step(lean, spec, torch.float64, sample_rate, world_size=world_size, rank=rank, mode=mode)
                        for lean in (True, False)])
    return out


@pytest.mark.parametrize("mode", MODES)
def test_two_ranks_equal_the_materialised_step_and_agree_bit_for_bit(mode):
    ranks = run_distributed(two_rank_steps, 2, SPECS, mode)
    for rank_steps in ranks:
        for (lean, plain), spec in zip(rank_steps, [s for s in SPECS for _ in (1.0, 0.3)]):
            assert_same_step(lean, plain, 1e-10), spec
    for (lean0, _), (lean1, _) in zip(*ranks):
        assert torch.equal(lean0[0], lean1[0])  # the same loss on every rank
    # the ranks hold different halves of the batch and of the classes: their gradients are
    # those of the one global loss
    single = step(True, {"name": "arcface"}, torch.float64, mode=mode)
    at = 2 * [spec["name"] for spec in SPECS].index("arcface")  # its sample_rate 1.0 step
    (arc0, _), (arc1, _) = ranks[0][at], ranks[1][at]
    assert relative(arc0[0], single[0]) <= 1e-12
    assert relative(torch.cat([arc0[1], arc1[1]]), 2 * single[1]) <= 1e-10  # x world size, as DDP averages
    assert relative(torch.cat([arc0[2], arc1[2]]), single[2]) <= 1e-10


def test_which_losses_are_chunked():
    assert {"arcface", "cosface", "elasticface-arc", "elasticface-arc-plus", "elasticface-cos",
            "elasticface-cos-plus", "sphereface-r"} <= set(CHUNKABLE)


class OwnForward(type(build_margin_loss("arcface"))):
    """A loss that overrides forward without opting in through chunkable()."""

    def forward(self, logits, labels, norms=None):
        return super().forward(logits, labels, norms) * 2


@pytest.mark.parametrize("loss", [OwnForward] + [lambda name=name: build_margin_loss(name) for name in REFUSED],
                         ids=["own-forward"] + REFUSED)
def test_a_loss_with_its_own_forward_is_refused_not_miscomputed(loss):
    with pytest.raises(ConfigError, match="partial_fc"):
        lean_partial_fc(PartialFC_V2)(loss(), DIM, CLASSES, 1.0, False)


def test_constructor_state_dict_and_sampling_are_the_base_classes():
    torch.manual_seed(0)
    lean = lean_partial_fc(PartialFC_V2, CHUNK)(build_margin_loss("arcface"), DIM, CLASSES, 0.3, False)
    torch.manual_seed(0)
    plain = PartialFC_V2(build_margin_loss("arcface"), DIM, CLASSES, 0.3, False)
    assert isinstance(lean, PartialFC_V2) and type(lean).__name__ == "LeanPartialFC_V2"
    assert lean.state_dict().keys() == plain.state_dict().keys()
    assert torch.equal(lean.weight, plain.weight)
    with pytest.raises(ConfigError, match="partial_fc"):
        lean_partial_fc(PartialFC_V2)(lambda logits, labels: logits, DIM, CLASSES, 1.0, False)


@pytest.mark.parametrize("value,key", [
    (8192, "partial_fc"), ("lean", "partial_fc"), ({"chunk": 0}, "partial_fc.chunk"),
    ({"chunk": True}, "partial_fc.chunk"), ({"chunk": 64.0}, "partial_fc.chunk"), ({"chnk": 64}, "partial_fc.chnk"),
    ({"recompute": 0}, "partial_fc.recompute"), ({"recompute": "no"}, "partial_fc.recompute"),
])
def test_bad_config_names_the_key(value, key):
    with pytest.raises(ConfigError) as error:
        craft_plugin.plugin.config(EasyDict(margin_loss="arcface", partial_fc=value))
    assert error.value.key == key


def test_config_needs_a_margin_loss_and_is_spell_checked():
    with pytest.raises(ConfigError, match="config.partial_fc .*margin_loss"):
        craft_plugin.plugin.config(EasyDict(partial_fc={"chunk": 64}))
    with pytest.raises(ConfigError, match="did you mean config.partial_fc"):
        resolve_config(EasyDict(partial_fcc={"chunk": 64}))
    for name in REFUSED:  # refused when the config is read, before training starts
        with pytest.raises(ConfigError, match="config.partial_fc"):
            craft_plugin.plugin.config(EasyDict(margin_loss=name, partial_fc={}))


@pytest.mark.parametrize("margin_loss", ["arcface", {"name": "sphereface-r", "norm": "soft"}, "magface", "curricularface"],
                         ids=str)
def test_the_hook_selects_the_lean_class(margin_loss):
    cfg = craft_plugin.plugin.config(EasyDict(margin_loss=margin_loss, partial_fc={"chunk": 64}))
    cls = craft_plugin.plugin.partial_fc_class(PartialFC_V2, cfg)
    assert issubclass(cls, PartialFC_V2) and cls.__name__ == "LeanPartialFC_V2" and cls.chunk_size == 64
    assert cls.recompute_cosines is True
    cfg = craft_plugin.plugin.config(EasyDict(margin_loss=margin_loss, partial_fc={"recompute": False}))
    cls = craft_plugin.plugin.partial_fc_class(PartialFC_V2, cfg)
    assert cls.chunk_size == DEFAULT_CHUNK and cls.recompute_cosines is False
    cfg = craft_plugin.plugin.config(EasyDict(margin_loss=margin_loss))
    assert "Lean" not in craft_plugin.plugin.partial_fc_class(PartialFC_V2, cfg).__name__


@pytest.mark.parametrize("mode", MODES)
def test_replica_training_matches_the_materialised_run_step_for_step(tmp_path, mode):
    """ElasticFace "+": margins drawn once per step on both paths, ranked by all-reduced cosines."""
    # float32 training amplifies rounding differences step by step: at lr 0.02 over one epoch they
    # stay at float32 rounding (at lr 0.1 this s = 64 mini run grows them to 1e-3 by step 8)
    common = dict(num_epoch=1, rec="synthetic:16x4", num_classes=16, num_image=64, batch_size=8, lr=0.02,
                  margin_loss="elasticface-arc-plus")
    plain = train(get_config(str(tmp_path / "plain"), **common), plugins=[craft_plugin.plugin])
    lean = train(get_config(str(tmp_path / "lean"), partial_fc={"chunk": 5, "recompute": MODES[mode]}, **common), plugins=[craft_plugin.plugin])
    assert "Lean" in type(lean.partial_fc).__name__ and "Lean" not in type(plain.partial_fc).__name__
    assert len(lean.losses) == len(plain.losses) == 8
    assert torch.allclose(torch.tensor(lean.losses), torch.tensor(plain.losses), rtol=1e-5, atol=0)
    lean_state, plain_state = state_of(lean), state_of(plain)
    assert lean_state.keys() == plain_state.keys()
    for key, value in plain_state.items():
        assert torch.allclose(lean_state[key].double(), value.double(), rtol=1e-4, atol=2e-5), key


def test_curricularface_t_advances_once_per_lean_step():
    """t <- alpha mean_i(cos theta_{y_i}) + (1 - alpha) t, once, from t = 0 (the -1 rows count as 0,
    as on the materialised path)."""
    _, _, _, state = step(True, {"name": "curricularface"}, torch.float64)
    x, y = batch(torch.float64)
    positive = y != -1
    target = torch.zeros(BATCH, dtype=torch.float64)
    target[positive] = (torch.nn.functional.normalize(x[positive])
                        * torch.nn.functional.normalize(global_weight()[y[positive]])).sum(1)
    assert relative(state["t"], 0.01 * target.mean()) <= 1e-12
