"""One prepared device check: everything this package has to show on a CUDA GPU, in one run.

Sections (each reports "ok", "failed: <one line>" or "skipped: <why>"; a failing section does not
stop the others, and a section that would start after the time budget is skipped):

- environment: device, torch, CUDA and driver versions;
- cuda_tests: the tests that skip without CUDA (found in tests/ by their
  ``skipif(not torch.cuda.is_available() ...)`` marker), then the suite's fast part (the files in
  FAST_TESTS) on the CUDA machine, each through pytest in a subprocess with a time limit;
- sync_audit: a training step of the replica's parts (its backbone, Partial FC and loop order, with
  the plugin's hooks) on the device for each feature: CRAFT's check with a revival, every
  registered margin loss, the lean Partial FC in both modes, fp16 with GradScaler, the uint8
  loader with pinned memory. After a warm-up step, two steps run under
  ``torch.cuda.set_sync_debug_mode("warn")`` with every sync warning recorded where it was made:
  a sync in torch's own code (GradScaler's step) or in the replica (upstream's code) is upstream's;
  one in this package must carry a comment or docstring saying it syncs (the lean forward's one
  target lookup, AMP's skipped-step read, CRAFT's check step); any other, or one the autograd engine
  reports from a backward, fails the section. ``"error"`` mode would stop at the documented ones;
- pfc_step: one Partial FC step (forward + backward) of upstream's ``PartialFC_V2`` (``--upstream``;
  else the replica's, which is upstream's step), the lean path recomputing and keeping the cosines,
  float32 and fp16 autocast, at (B, C_local, D) = (1024, 200000, 512) and (4096, 1000000, 512)
  where memory allows: median milliseconds over interleaved repeats timed with CUDA events and
  ``torch.cuda.max_memory_allocated`` above the inputs per case;
- loader: images/s of an epoch over a synthetic 112x112 ``.rec`` landing on the device, the uint8
  path (normalised on the device) against the float path (normalised in the workers);
- eval_embedding: images/s of ``craft_plugin.evaluation.models.TorchEmbedder.embed_tensor``
  (upstream's r50 with ``--upstream``, else the replica's backbone), skipped if that module is absent;
- losses_cuda_vs_cpu: ElasticFace's margins from its generator on the device (the same draws again
  from a saved state, mean and spread of the draws, the loss given those draws equal to the CPU's),
  CurricularFace (its all-reduced target statistics and logits) and AdaFace (its norm statistics
  and logits) on the device equal to the CPU's;
- gloo_two_processes: two processes, gloo, tensors on the device (one GPU cannot host two NCCL
  ranks): the all-reduces (SUM, MAX) and broadcasts the losses and CRAFT use, ElasticFace "+"'s
  ranking and CurricularFace's t against the same values computed on one process.

``--quick`` runs on the CPU in well under 2 minutes: small sizes, the CUDA-only parts reported as
"skipped: no CUDA"; sections whose code can run on the CPU still run there (small), so that the
script cannot rot unnoticed (a benchmark smoke test runs it so).

Writes ``device_check.json`` and ``device_check.md`` (a table naming the device, torch, CUDA and
driver) under ``--out``; prints the table and ends with one JSON line.

usage: python bench/device_check.py [--quick] [--upstream PATH] [--out DIR] [--budget SECONDS]
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

FAST_TESTS = ["tests/test_uint8_feed.py", "tests/test_lean_partial_fc.py", "tests/test_losses.py",
              "tests/test_losses_adaface_magface_curricular.py", "tests/test_interclass_filtering.py"]
PFC_SIZES = [(1024, 200000), (4096, 1000000)]
PFC_QUICK = [(64, 4000)]
PFC_REPEATS = 5
NO_CUDA = "skipped: no CUDA"
SYNC_NOTE = re.compile(r"sync", re.IGNORECASE)
DENIAL = re.compile(r"\b(no|without|free of|need no)\b", re.IGNORECASE)  # "no host sync" documents none


def cuda() -> bool:
    return torch.cuda.is_available()


def one_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().splitlines()
    return text[0][:300] if text else type(error).__name__


# ---------------------------------------------------------------- environment


def environment() -> dict:
    info = {"status": "ok", "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.version.cuda or "none", "cpu": cpu_name(), "cores": os.cpu_count()}
    if cuda():
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, memory_gib=round(props.total_memory / 2 ** 30, 1),
                    capability=f"{props.major}.{props.minor}", cudnn=torch.backends.cudnn.version(),
                    driver=nvidia_smi("driver_version"), tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    else:
        info.update(device=f"cpu ({info['cpu']})", driver="none")
    return info


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def nvidia_smi(field: str) -> str:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---------------------------------------------------------------- tests


def cuda_only_tests() -> List[str]:
    """Node ids (file::function) of the tests marked to skip without CUDA."""
    ids = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                for decorator in node.decorator_list:
                    text = ast.unparse(decorator)
                    if "skipif" in text and "cuda.is_available" in text:
                        ids.append(f"tests/{path.name}::{node.name}")
    return ids


def pytest_run(args: List[str], timeout: float) -> dict:
    """pytest in a subprocess: its counts from the summary line, the failures' ids."""
    start = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                             cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"failed: pytest did not finish within {timeout:.0f} s", "s": round(timeout, 1)}
    text = out.stdout + out.stderr
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", text)}
    failures = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.MULTILINE)
    status = "ok" if out.returncode in (0, 5) and not failures else f"failed: {', '.join(failures[:5]) or text[-300:]}"
    return {"status": status, "counts": counts, "s": round(time.perf_counter() - start, 1)}


def cuda_tests(budget: float) -> dict:
    ids = cuda_only_tests()
    if not cuda():
        return {"status": NO_CUDA, "cuda_only_tests": ids}
    only = pytest_run(ids, min(120.0, budget / 2)) if ids else {"status": "ok", "counts": {}}
    fast = pytest_run(["-x", *FAST_TESTS], max(30.0, budget - only.get("s", 0)))
    failed = [part["status"] for part in (only, fast) if part["status"] != "ok"]
    return {"status": failed[0] if failed else "ok", "cuda_only_tests": ids, "cuda_only": only, "fast_part": fast}


# ---------------------------------------------------------------- sync audit


def says_it_syncs(text: str) -> bool:
    """Whether ``text`` (a comment or docstring) says the code syncs: a "sync" not denied just before."""
    return any(not DENIAL.search(text[max(0, m.start() - 40):m.start()]) for m in SYNC_NOTE.finditer(text))


def documented_sync(filename: str, lineno: int) -> bool:
    """A comment on the line or in the comment lines just above it, or the enclosing function's
    docstring, says the code syncs there."""
    try:
        source = Path(filename).read_text()
    except OSError:
        return False
    lines = source.splitlines()
    at = lineno - 1
    if 0 <= at < len(lines) and "#" in lines[at] and says_it_syncs(lines[at].split("#", 1)[1]):
        return True
    above = at - 1
    while above >= 0 and lines[above].strip().startswith("#"):
        if says_it_syncs(lines[above]):
            return True
        above -= 1
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.lineno <= lineno <= node.end_lineno:
            if says_it_syncs(ast.get_docstring(node) or ""):
                return True
    return False


def classify_sync(filename: str, lineno: int) -> str:
    path = str(Path(filename).resolve())
    package = str(ROOT / "craft_plugin")
    if path.startswith(str(Path(torch.__file__).parent)):
        return "torch"
    if path.startswith(str(ROOT / "craft_plugin" / "_replica")):
        return "upstream (replica)"
    if path.startswith(package):
        return "documented" if documented_sync(path, lineno) else "undocumented"
    return "undocumented (reported outside the package: a backward or this script)"


@contextlib.contextmanager
def sync_recorder(sites: List[dict]):
    """Records every host-device sync torch reports (CUDA only), with where it was made."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for record in caught:
        if "synchroniz" in str(record.message):
            sites.append({"file": os.path.relpath(record.filename, ROOT), "line": record.lineno,
                          "kind": classify_sync(record.filename, record.lineno)})


def write_faces(folder: Path, identities: int, per_identity: int, size: int) -> None:
    from craft_plugin.data.writer import write_rec
    from craft_plugin._replica.synthetic import synthetic_image

    write_rec(folder, [(synthetic_image(3, k, j, size), k) for k in range(identities) for j in range(per_identity)])


def feature_configs() -> Dict[str, dict]:
    """Plugin config keys for each feature the audit trains with."""
    from craft_plugin.losses import MARGIN_LOSSES

    configs = {"craft": {"reactivation": {"every": 1, "start": 1, "max_revive": 4}}}
    for name in MARGIN_LOSSES.names():
        configs[f"loss {name}"] = {"margin_loss": name}
    for mode, recompute in (("recompute", True), ("keep", False)):
        configs[f"lean {mode}"] = {"margin_loss": "arcface", "partial_fc": {"chunk": 8, "recompute": recompute}}
    configs["fp16 + craft + lean keep"] = {"fp16": True, "reactivation": {"every": 1, "start": 1, "max_revive": 4},
                                           "margin_loss": "arcface", "partial_fc": {"chunk": 8, "recompute": False}}
    return configs


def train_steps(keys: dict, rec: str, device: torch.device, steps: int, audit: bool, workers: int) -> dict:
    """The replica's training loop order (train_v2.py) for ``steps`` steps on ``device`` with the
    plugin's hooks; the steps after the first recorded by :func:`sync_recorder` when ``audit``."""
    import craft_plugin.plugin as plugin
    from craft_plugin.data.dataloader import make_loader
    from craft_plugin.data.dataset import RecFaceDataset
    from craft_plugin._replica.backbone import get_model
    from craft_plugin._replica.config import get_config
    from craft_plugin._replica.losses import CombinedMarginLoss
    from craft_plugin._replica.partial_fc import PartialFC_V2

    with tempfile.TemporaryDirectory() as out:
        # a small lr keeps the zeroed filters below CRAFT's threshold after the first step
        cfg = plugin.config(get_config(out, rec=rec, num_classes=8, num_image=64, batch_size=16, lr=1e-3, **keys))
        torch.manual_seed(0)
        backbone = get_model(cfg.network, dropout=0.0, fp16=cfg.fp16, num_features=cfg.embedding_size).to(device)
        with torch.no_grad():  # a few dead conv1 filters, so that CRAFT's check revives
            backbone.conv1.weight[:3] = 0
        margin = plugin.margin_loss(CombinedMarginLoss(64, *cfg.margin_list, cfg.interclass_filtering_threshold), cfg)
        pfc = plugin.partial_fc_class(PartialFC_V2, cfg)(margin, cfg.embedding_size, cfg.num_classes,
                                                        cfg.sample_rate, False).to(device)
        opt = torch.optim.SGD([{"params": backbone.parameters()}, {"params": pfc.parameters()}],
                              lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
        plugin.on_train_start(cfg=cfg, backbone=backbone, partial_fc=pfc, optimizer=opt, lr_scheduler=None,
                              summary_writer=None, rank=0, world_size=1)
        loader = make_loader(RecFaceDataset(rec), 0, cfg.batch_size, cfg.seed, workers)
        scaler = torch.amp.GradScaler(device.type, growth_interval=100, enabled=cfg.fp16)
        sites: List[dict] = []
        losses = []
        batches = iter(loader)
        for step in range(1, steps + 1):
            recorder = sync_recorder(sites) if audit and step > 1 else contextlib.nullcontext()
            with recorder:
                images, labels = next(batches)
                loss = pfc(backbone(images), labels)
                if cfg.fp16:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(backbone.parameters(), 5)
                    scaler.step(opt)
                    plugin.on_optimizer_step(global_step=step, optimizer=opt, scaler=scaler)
                    scaler.update()
                else:
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(backbone.parameters(), 5)
                    opt.step()
                    plugin.on_optimizer_step(global_step=step, optimizer=opt, scaler=None)
                opt.zero_grad()
                losses.append(loss.detach())
        revived = None
        if "reactivation" in keys:
            revived = sum(len(r["revived"]) for r in plugin.feature("reactivation").reactivator.history)
        plugin.config(get_config(out))  # back to no features
        return {"losses": [round(float(v), 4) for v in losses], "sites": sites, "revived": revived,
                "images_device": images.device.type, "images_dtype": str(images.dtype)}


def sync_audit(quick: bool, rec: str) -> dict:
    device = torch.device("cuda", 0) if cuda() else torch.device("cpu")
    rows, failed = {}, []
    for name, keys in feature_configs().items():
        try:
            got = train_steps(keys, rec, device, 1 if quick else 3, cuda(), 0 if quick else 2)
        except Exception as error:  # noqa: BLE001 - one line per feature in the report
            rows[name] = {"status": f"failed: {one_line(error)}"}
            failed.append(name)
            continue
        bad = [s for s in got["sites"] if s["kind"].startswith("undocumented")]
        finite = all(v == v and abs(v) < float("inf") for v in got["losses"])
        ok = finite and not bad and (got["revived"] is None or got["revived"] > 0)
        rows[name] = {"status": "ok" if ok else "failed: " + ("undocumented syncs" if bad else
                                                             "non-finite loss" if not finite else "nothing revived"),
                      **got}
        if not ok:
            failed.append(name)
    status = "ok" if not failed else f"failed: {', '.join(failed)}"
    if not cuda():
        status = f"{NO_CUDA} (the steps ran on the CPU: {'ok' if not failed else status})"
    return {"status": status, "features": rows}


# ---------------------------------------------------------------- Partial FC step


def load_upstream_on_device(path: str):
    """upstream's (PartialFC_V2, CombinedMarginLoss) in a one-rank group (NCCL on CUDA)."""
    from torch import distributed

    if not distributed.is_initialized():
        store = os.path.join(tempfile.mkdtemp(), "store")
        distributed.init_process_group("nccl" if cuda() else "gloo", init_method=f"file://{store}", rank=0,
                                       world_size=1)
    if not cuda():
        torch.Tensor.cuda = lambda self, *args, **kwargs: self  # upstream allocates with .cuda()
    from bench_lean_pfc import import_upstream_pfc

    return import_upstream_pfc(path)


def make_pfc(case: str, classes: int, fp16: bool, upstream: str, device: torch.device):
    from craft_plugin.losses import build_margin_loss
    from craft_plugin.partial_fc.lean import DEFAULT_CHUNK, lean_partial_fc
    from craft_plugin._replica.losses import CombinedMarginLoss
    from craft_plugin._replica.partial_fc import PartialFC_V2

    torch.manual_seed(0)
    if case in ("recompute", "keep"):
        cls = lean_partial_fc(PartialFC_V2, DEFAULT_CHUNK, case == "recompute")
        return cls(build_margin_loss("arcface"), 512, classes, 1.0, fp16).to(device)
    if case == "upstream":
        pfc_class, margin_class = load_upstream_on_device(upstream)
        return pfc_class(margin_class(64, 1.0, 0.5, 0.0), 512, classes, 1.0, fp16).to(device)
    return PartialFC_V2(CombinedMarginLoss(64, 1.0, 0.5, 0.0), 512, classes, 1.0, fp16).to(device)


def pfc_step(quick: bool, upstream: str) -> dict:
    device = torch.device("cuda", 0) if cuda() else torch.device("cpu")
    reference = "upstream" if upstream else "materialised"
    cases = [reference, "recompute", "keep"]
    sizes = PFC_QUICK if quick or not cuda() else PFC_SIZES
    repeats = 2 if quick or not cuda() else PFC_REPEATS
    rows = {}
    for batch, classes in sizes:
        for fp16 in (False, True):
            key = f"{batch}x{classes} {'fp16' if fp16 else 'float32'}"
            rows[key] = pfc_size(cases, batch, classes, fp16, upstream, device, repeats)
    failed = [k for k, row in rows.items() if any(str(c.get("status", "ok")).startswith("failed") for c in row.values()
                                                  if isinstance(c, dict))]
    status = "ok" if not failed else f"failed: {', '.join(failed)}"
    if not cuda():
        status = f"{NO_CUDA} (a small CPU run: {status}; autocast is bfloat16 there)"
    return {"status": status, "reference": reference, "sizes": rows}


def pfc_size(cases, batch, classes, fp16, upstream, device, repeats) -> dict:
    """Median step ms (cases interleaved) and peak memory above the inputs per case."""
    gen = torch.Generator().manual_seed(1)
    embeddings = torch.randn(batch, 512, generator=gen).to(device)
    labels = torch.randint(0, classes, (batch,), generator=gen).to(device)
    row: Dict[str, Any] = {}
    modules = {}
    for case in cases:
        try:
            modules[case] = make_pfc(case, classes, fp16, upstream, device)
            row[case] = {"peak_mib": peak_mib(modules[case], embeddings, labels, device)}
        except torch.cuda.OutOfMemoryError:
            row[case] = {"status": "skipped: out of memory"}
            modules.pop(case, None)
            torch.cuda.empty_cache()
        except Exception as error:  # noqa: BLE001
            row[case] = {"status": f"failed: {one_line(error)}"}
            modules.pop(case, None)
    times = {case: [] for case in modules}
    for _ in range(repeats):
        for case in list(modules):
            try:
                times[case].append(timed_step(modules[case], embeddings, labels, device))
            except torch.cuda.OutOfMemoryError:
                row[case]["status"] = "skipped: out of memory while timing"
                del modules[case], times[case]
                torch.cuda.empty_cache()
    for case, ms in times.items():
        row[case]["ms"] = round(statistics.median(ms), 2)
    del modules
    if device.type == "cuda":
        torch.cuda.empty_cache()
    ref = cases[0]
    if ref in times:
        for case in times:
            row[case]["time_x_ref"] = round(row[case]["ms"] / row[ref]["ms"], 3)
            if row[case]["peak_mib"] is not None and row[ref]["peak_mib"]:
                row[case]["memory_x_ref"] = round(row[case]["peak_mib"] / row[ref]["peak_mib"], 3)
    return row


def one_step(pfc, embeddings, labels) -> None:
    x = embeddings.clone().requires_grad_(True)
    pfc(x, labels.clone()).backward()
    pfc.weight.grad = None


def peak_mib(pfc, embeddings, labels, device) -> Optional[float]:
    one_step(pfc, embeddings, labels)  # warm-up (cuBLAS handles, allocator)
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    one_step(pfc, embeddings, labels)
    torch.cuda.synchronize()
    return round((torch.cuda.max_memory_allocated() - base) / 2 ** 20, 1)


def timed_step(pfc, embeddings, labels, device) -> float:
    if device.type != "cuda":
        start = time.perf_counter()
        one_step(pfc, embeddings, labels)
        return (time.perf_counter() - start) * 1000
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    one_step(pfc, embeddings, labels)
    end.record()
    end.synchronize()
    return begin.elapsed_time(end)


# ---------------------------------------------------------------- loader


def loader(quick: bool, tmp: Path) -> dict:
    from bench_reader import NormalisedInWorker  # the float path, as bench_reader times it
    from craft_plugin.data.dataloader import DeviceLoader
    from craft_plugin.data.dataset import RecFaceDataset

    folder = tmp / "faces112"
    count = 256 if quick else 4096
    write_faces(folder, 16, count // 16, 112)
    dataset = RecFaceDataset(str(folder))
    device = torch.device("cuda", 0) if cuda() else None
    workers = 2 if quick else min(8, os.cpu_count() or 2)
    rates = {}
    for name, data in (("uint8", dataset), ("float", NormalisedInWorker(dataset))):
        epochs = []
        for _ in range(2):
            start, seen = time.perf_counter(), 0
            for images, _labels in DeviceLoader(device, dataset=data, batch_size=128, num_workers=workers,
                                                pin_memory=device is not None, shuffle=True, drop_last=True):
                seen += len(images)
            if device is not None:
                torch.cuda.synchronize()
            epochs.append(seen / (time.perf_counter() - start))
        rates[name] = round(max(epochs), 1)
    status = "ok" if cuda() else f"{NO_CUDA} (the CPU figures below are the loader landing on the CPU)"
    return {"status": status, "images": count, "workers": workers, "pinned": device is not None,
            "images_per_s": rates, "uint8_x_float": round(rates["uint8"] / rates["float"], 3)}


# ---------------------------------------------------------------- eval embedding


def eval_embedding(quick: bool, upstream: str) -> dict:
    try:
        from craft_plugin.evaluation.models import TorchEmbedder
    except ImportError as error:
        return {"status": f"skipped: craft_plugin.evaluation.models is absent ({one_line(error)})"}
    device = "cuda" if cuda() else "cpu"
    if upstream and not quick:
        sys.path.insert(0, upstream)
        from backbones import get_model  # upstream's, from --upstream

        net, name = get_model("r50", fp16=False, num_features=512), "upstream r50"
    else:
        from craft_plugin._replica.backbone import get_model

        net, name = get_model("mini", num_features=512), "replica mini"
    net = net.to(device).eval()
    count = 16 if quick or not cuda() else 4096
    images = torch.randint(0, 256, (count, 3, 112, 112), dtype=torch.uint8)
    rates = {}
    for fp16 in ((False, True) if cuda() else (False,)):
        embedder = TorchEmbedder(net, name, device, 256, fp16, {})
        embedder.embed_tensor(images[:256])  # warm-up
        if cuda():
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = embedder.embed_tensor(images)
        if cuda():
            torch.cuda.synchronize()
        rates["fp16" if fp16 else "float32"] = round(count / (time.perf_counter() - start), 1)
        assert out.shape == (count, 512) and bool(torch.isfinite(out).all())
    status = "ok" if cuda() else f"{NO_CUDA} (ran on the CPU)"
    return {"status": status, "model": name, "images": count, "images_per_s": rates}


# ---------------------------------------------------------------- losses on the device


def close(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return bool(((a - b).abs().max() <= tol * b.abs().max().clamp_min(1e-30)).item())


def loss_inputs(device: torch.device, batch: int = 64, classes: int = 32):
    gen = torch.Generator().manual_seed(4)
    cos = (torch.rand(batch, classes, generator=gen) * 1.6 - 0.8)
    labels = torch.randint(0, classes, (batch, 1), generator=gen)
    labels[::7] = -1
    norms = torch.rand(batch, 1, generator=gen) * 40 + 5
    return cos.to(device), labels.to(device), norms.to(device)


def loss_step(loss, cos, labels, norms):
    """What the norm-aware Partial FC asks of a loss: ``prepare`` with the norms, then the logits."""
    norms = norms if loss.needs_norms else None
    loss.prepare(norms)
    return loss(cos.clone(), labels.clone(), norms)


def losses_cuda_vs_cpu() -> dict:
    from craft_plugin.losses import build_margin_loss

    device = torch.device("cuda", 0) if cuda() else torch.device("cpu")
    checks = {}
    # ElasticFace: its generator lives on the logits' device, so its draws are that device's
    spec = {"name": "elasticface-arc", "seed": 7}
    cos, labels, _ = loss_inputs(device)
    rows = torch.nonzero(labels.view(-1) != -1).view(-1)
    target = cos[rows, labels.view(-1)[rows]]
    first, again = build_margin_loss(spec), build_margin_loss(spec)
    first.margins(target, rows, cos.size(0))
    again.load_extra_state(first.extra_state())
    drawn, redrawn = first.margins(target, rows, cos.size(0)), again.margins(target, rows, cos.size(0))
    many = torch.normal(first.m, first.sigma, (200000,), generator=first.generator_on(device), device=device)
    same = bool(torch.equal(drawn, redrawn))
    checks["elasticface_generator"] = {
        "device": drawn.device.type, "same_draws_from_saved_state": same,
        "draws_mean_std": [round(float(many.mean()), 4), round(float(many.std()), 4)],
        "ok": same and abs(float(many.mean()) - first.m) < 1e-3 and abs(float(many.std()) - first.sigma) < 1e-3}
    on_device, replay, on_cpu = (build_margin_loss(spec) for _ in range(3))
    out = on_device(cos.clone(), labels.clone())
    margins = replay.margins(target, rows, cos.size(0)).cpu()  # the draws that forward made
    on_cpu.margins = lambda *args, **kwargs: margins  # given to the CPU computation
    want = on_cpu(cos.cpu().clone(), labels.cpu().clone())
    checks["elasticface_loss_given_draws"] = {"ok": close(out, want, 1e-5)}
    # CurricularFace and AdaFace: state and logits on the device equal the CPU's
    for name in ("curricularface", "adaface"):
        dev_loss, cpu_loss = build_margin_loss(name).to(device), build_margin_loss(name)
        cos_d, labels_d, norms_d = loss_inputs(device)
        results = []
        for loss, c, y, n in ((dev_loss, cos_d, labels_d, norms_d),
                              (cpu_loss, cos_d.cpu(), labels_d.cpu(), norms_d.cpu())):
            outs = [loss_step(loss, c, y, n) for _ in range(2)]  # two steps: the moving statistics advance
            results.append((outs, {k: torch.as_tensor(v) for k, v in loss.extra_state().items()}))
        (dev_outs, dev_state), (cpu_outs, cpu_state) = results
        ok = all(close(a, b, 1e-5) for a, b in zip(dev_outs, cpu_outs))
        ok = ok and all(close(dev_state[k], cpu_state[k], 1e-5) for k in cpu_state if cpu_state[k].is_floating_point())
        checks[name] = {"ok": ok, "state": {k: [round(float(x), 6) for x in v.double().view(-1)[:4]]
                                            for k, v in cpu_state.items() if v.is_floating_point()}}
    failed = [k for k, v in checks.items() if not v["ok"]]
    status = "ok" if not failed else f"failed: {', '.join(failed)}"
    if not cuda():
        status = f"{NO_CUDA} (CPU against CPU ran: {status})"
    return {"status": status, "checks": checks}


# ---------------------------------------------------------------- two processes, gloo


def two_rank_collectives(device_type: str) -> dict:
    """Run in each of two gloo ranks: the collectives the losses and CRAFT use, on ``device_type``."""
    from torch import distributed

    from craft_plugin.distributed import all_reduce_, rank_and_world_size
    from craft_plugin.losses import build_margin_loss

    rank, world = rank_and_world_size()
    device = torch.device(device_type, 0) if device_type == "cuda" else torch.device("cpu")
    values = torch.arange(6, dtype=torch.float32, device=device) * (rank + 1)
    summed = all_reduce_(values.clone())
    largest = all_reduce_(values.clone(), distributed.ReduceOp.MAX)
    flag = torch.tensor([rank + 7], device=device)
    distributed.broadcast(flag, 0)  # CRAFT's revival flag and tensors come from rank 0
    # ElasticFace "+": targets all-reduced (each rank holds its classes' rows), ranked, then margins
    gen = torch.Generator().manual_seed(11)
    target_all = torch.rand(16, generator=gen)
    mine = torch.zeros(16)
    mine[rank::2] = target_all[rank::2]
    loss = build_margin_loss({"name": "elasticface-arc-plus", "seed": 3})
    rows = torch.arange(rank, 16, 2, device=device)
    margins = loss.margins(mine.to(device)[rows], rows, 16)
    curricular = build_margin_loss("curricularface").to(device)  # its t lives where the targets do
    curricular.prepare_targets(mine.to(device))
    return {"device": values.device.type, "sum": summed.cpu().tolist(), "max": largest.cpu().tolist(),
            "broadcast": int(flag.item()), "margins": margins.cpu().tolist(), "rows": rows.cpu().tolist(),
            "curricular_t": float(curricular.extra_state()["t"])}


def gloo_two_processes() -> dict:
    from craft_plugin._replica.launch import run_distributed
    from craft_plugin.losses import build_margin_loss

    device_type = "cuda" if cuda() else "cpu"
    ranks = run_distributed(two_rank_collectives, 2, device_type, timeout=120)
    base = torch.arange(6, dtype=torch.float32)
    gen = torch.Generator().manual_seed(11)
    target_all = torch.rand(16, generator=gen)
    single = build_margin_loss({"name": "elasticface-arc-plus", "seed": 3})
    every = single.margins(target_all, torch.arange(16), 16)  # one process holding every row
    curricular = build_margin_loss("curricularface")
    curricular.prepare_targets(target_all)
    checks = {
        "all_reduce_sum": all(r["sum"] == (base * 3).tolist() for r in ranks),
        "all_reduce_max": all(r["max"] == (base * 2).tolist() for r in ranks),
        "broadcast": all(r["broadcast"] == 7 for r in ranks),
        "elasticface_plus": all(close(torch.tensor(r["margins"]), every[torch.tensor(r["rows"])], 1e-6) for r in ranks),
        "curricularface_t": all(abs(r["curricular_t"] - float(curricular.extra_state()["t"])) < 1e-7 for r in ranks),
        "tensors_on": ranks[0]["device"],
    }
    failed = [k for k, v in checks.items() if v is False]
    status = "ok" if not failed else f"failed: {', '.join(failed)}"
    if not cuda():
        status = f"{NO_CUDA} (the same on CPU tensors: {status})"
    return {"status": status, "checks": checks}


# ---------------------------------------------------------------- report


SECTIONS = ["environment", "cuda_tests", "sync_audit", "pfc_step", "loader", "eval_embedding",
            "losses_cuda_vs_cpu", "gloo_two_processes"]


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"Device check: {env.get('device')}, torch {env.get('torch')}, CUDA {env.get('cuda')}, "
             f"driver {env.get('driver')}; {report['mode']} run, {report['seconds']:.0f} s", "",
             "| section | status | s |", "|---|---|---|"]
    for name in SECTIONS:
        part = report[name]
        lines.append(f"| {name} | {part['status']} | {part.get('section_s', '')} |")
    pfc = report["pfc_step"]
    if "sizes" in pfc:
        lines += ["", f"Partial FC step (reference: {pfc['reference']})", "",
                  "| size | case | ms | x ref | peak MiB | x ref |", "|---|---|---|---|---|---|"]
        for size, row in pfc["sizes"].items():
            for case, got in row.items():
                peak = got.get("peak_mib", "")
                lines.append(f"| {size} | {case} | {got.get('ms', got.get('status', ''))} | {got.get('time_x_ref', '')} "
                             f"| {'n/a (CPU)' if peak is None else peak} | {got.get('memory_x_ref', '')} |")
    audit = report["sync_audit"]
    if "features" in audit:
        lines += ["", "| training step with | status | syncs recorded (file:line kind) |", "|---|---|---|"]
        for name, got in audit["features"].items():
            sites = sorted({f"{s['file']}:{s['line']} {s['kind']}" for s in got.get("sites", [])})
            lines.append(f"| {name} | {got['status']} | {'; '.join(sites) or '-'} |")
    if "images_per_s" in report["loader"]:
        lines += ["", f"Loader images/s: {report['loader']['images_per_s']} "
                      f"(uint8 x float {report['loader']['uint8_x_float']})"]
    if "images_per_s" in report["eval_embedding"]:
        lines += [f"Eval embedding images/s ({report['eval_embedding']['model']}): "
                  f"{report['eval_embedding']['images_per_s']}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes on whatever device there is (the CPU "
                                                             "smoke run; CUDA parts are reported as skipped)")
    parser.add_argument("--upstream", default="", metavar="PATH",
                        help="an arcface_torch checkout: its PartialFC_V2 is the Partial FC reference and its r50 "
                             "the eval model (default: none, the replica's)")
    parser.add_argument("--out", default="device_check_out", metavar="DIR",
                        help="folder for device_check.json and device_check.md (default: device_check_out)")
    parser.add_argument("--budget", type=float, default=480.0, metavar="SECONDS",
                        help="sections that would start after this many seconds are skipped (default: 480)")
    args = parser.parse_args()
    started = time.perf_counter()
    report: Dict[str, Any] = {"mode": "quick" if args.quick else "full", "upstream": bool(args.upstream)}
    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(tmp) / "faces"
        write_faces(rec, 8, 8, 32)
        runners: Dict[str, Callable[[], dict]] = {
            "environment": environment,
            "cuda_tests": lambda: cuda_tests(min(200.0, args.budget / 2)),
            "sync_audit": lambda: sync_audit(args.quick, str(rec)),
            "pfc_step": lambda: pfc_step(args.quick, args.upstream),
            "loader": lambda: loader(args.quick, Path(tmp)),
            "eval_embedding": lambda: eval_embedding(args.quick, args.upstream),
            "losses_cuda_vs_cpu": losses_cuda_vs_cpu,
            "gloo_two_processes": gloo_two_processes,
        }
        for name in SECTIONS:
            begin = time.perf_counter()
            if begin - started > args.budget:
                report[name] = {"status": f"skipped: the {args.budget:.0f} s budget was spent"}
                continue
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    report[name] = runners[name]()
            except Exception as error:  # noqa: BLE001 - a failing section must not stop the others
                report[name] = {"status": f"failed: {one_line(error)}",
                                "where": traceback.format_exc().strip().splitlines()[-3:]}
            report[name]["section_s"] = round(time.perf_counter() - begin, 1)
            print(f"{name}: {report[name]['status']} ({report[name]['section_s']} s)", file=sys.stderr)
    report["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(report)
    for filename, text in (("device_check.json", json.dumps(report, indent=1, default=str) + "\n"),
                           ("device_check.md", table)):
        partial = out / f".{filename}.tmp"
        partial.write_text(text)
        os.replace(partial, out / filename)
    print(table)
    print(json.dumps({"bench": "device_check", "figures": report}, default=str))


if __name__ == "__main__":
    main()
