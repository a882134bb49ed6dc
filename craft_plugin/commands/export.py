"""craft-plugin export MODEL OUT.onnx: a trained backbone as ONNX, the way arcface_torch's
torch2onnx.py exports it (eval mode, a 1x3x112x112 input named "data", opset 11), with the batch
dimension dynamic, then checked with onnxruntime against PyTorch on a batch. The result loads in
insightface's model_zoo.get_model as an ArcFaceONNX (input (x - 127.5) / 127.5 on RGB,
arcface_torch's normalisation).

MODEL is a model.pt (backbone state_dict), a folder holding one, or a checkpoint_gpu_*.pt (its
state_dict_backbone), read with weights_only=True. The network is built by a
get_model(name, dropout=0.0, fp16=False, num_features=E) factory: backbones.get_model of your
arcface_torch checkout (--arcface-torch PATH with --network NAME, or with --config configs/JOB.py
for the run's network and embedding size), or --module pkg.mod:factory."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Tuple

from craft_plugin.cli import output_path, print_json

OPSET = 11                      # torch2onnx.py's opset
INPUT_SIZE = 112                # arcface_torch's aligned crops
DEFAULT_EMBEDDING_SIZE = 512    # torch2onnx.py builds every network with num_features=512
CHECK_BATCH = 8
TOLERANCE = 1e-4                # onnxruntime vs PyTorch: max |difference| / max |embedding|


class ExportError(ValueError):
    """The export cannot go ahead; the message names the argument or file and what is expected."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained backbone to ONNX for insightface", description=__doc__)
    p.add_argument("model", help="model.pt, a folder holding model.pt, or checkpoint_gpu_N.pt")
    p.add_argument("out", help="the .onnx file to write")
    p.add_argument("--arcface-torch", metavar="PATH", help="your arcface_torch checkout (its backbones.get_model)")
    p.add_argument("--config", help="with --arcface-torch: the run's config, configs/JOB.py (network, embedding_size)")
    p.add_argument("--module", metavar="PKG.MOD:FACTORY", help="a get_model-like factory instead of a checkout's")
    p.add_argument("--network", help="network name passed to the factory (r50, r100, mbf, ...)")
    p.add_argument("--embedding-size", type=int,
                   help=f"num_features (default: the config's embedding_size, else {DEFAULT_EMBEDDING_SIZE} as torch2onnx.py)")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET}, as torch2onnx.py)")
    p.add_argument("--check-batch", type=int, default=CHECK_BATCH,
                   help=f"batch size of the onnxruntime check (default {CHECK_BATCH})")
    p.add_argument("--json", action="store_true", help="print only a JSON summary on stdout")
    p.set_defaults(run=run)


def import_from_checkout(root: Path, name: str) -> Any:
    """Import ``name`` from the checkout at ``root`` even if a module of that name (``utils``,
    ``backbones``, ``configs``) was imported from elsewhere before."""
    for cached in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        origin = getattr(sys.modules[cached], "__file__", None) or ""
        if not Path(origin).resolve().is_relative_to(root):
            del sys.modules[cached]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    return importlib.import_module(name)


def network_factory(args: argparse.Namespace) -> Tuple[Callable, str, int, str]:
    """``(factory, network, embedding_size, where the factory comes from)`` from the arguments."""
    embedding_size = args.embedding_size
    if args.module:
        if args.arcface_torch or args.config:
            raise ExportError("--module replaces --arcface-torch/--config: give one of them")
        module_name, _, attr = args.module.partition(":")
        if not attr:
            raise ExportError(f"--module {args.module!r}: expected PKG.MOD:FACTORY, e.g. backbones:get_model")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ExportError(f"--module {args.module!r}: {exc}") from exc
        source, network = args.module, args.network
    elif args.arcface_torch:
        root = Path(args.arcface_torch).resolve()
        if not (root / "backbones" / "__init__.py").is_file():
            raise ExportError(f"--arcface-torch {args.arcface_torch}: no backbones/__init__.py there; "
                              f"expected insightface/recognition/arcface_torch")
        network = args.network
        if args.config:
            rel = Path(os.path.relpath(Path(args.config).resolve(), root)) if Path(args.config).is_absolute() \
                else Path(args.config)
            rel = rel if rel.suffix == ".py" else rel.with_name(rel.name + ".py")  # train_v2.py takes both
            if rel.parts[:1] != ("configs",) or not (root / rel).is_file():
                raise ExportError(f"--config {args.config}: expected a file configs/JOB.py inside {root}")
            cfg = import_from_checkout(root, "utils.utils_config").get_config(rel.as_posix())
            network = network or cfg.network
            embedding_size = embedding_size or cfg.embedding_size
        factory = import_from_checkout(root, "backbones").get_model
        source = f"{root / 'backbones'}:get_model"
    else:
        raise ExportError("no network: give --arcface-torch PATH with --network NAME or --config configs/JOB.py, "
                          "or --module PKG.MOD:FACTORY with --network NAME")
    if not network:
        raise ExportError("no network name: give --network NAME (or --config with --arcface-torch)")
    return factory, network, embedding_size or DEFAULT_EMBEDDING_SIZE, source


def load_backbone_state(path: Path) -> dict:
    """The backbone state_dict of a model.pt, a folder with one, or an arcface_torch checkpoint."""
    import torch

    from craft_plugin.checkpoints import UntrustedFileError, load_weights

    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    try:
        state = load_weights(path)
    except UntrustedFileError as exc:
        raise ExportError(str(exc)) from exc
    except Exception as exc:  # a truncated or foreign file: name it, keep the reason
        raise ExportError(f"{path}: not a readable torch file with weights only ({exc})") from exc
    if isinstance(state, dict) and "state_dict_backbone" in state:
        state = state["state_dict_backbone"]
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise ExportError(f"{path}: expected a backbone state_dict (model.pt) or a checkpoint_gpu_N.pt")
    return state


def build_network(factory: Callable, network: str, embedding_size: int, state: dict, model: Path) -> torch.nn.Module:
    net = factory(network, dropout=0.0, fp16=False, num_features=embedding_size)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ExportError(f"{model} does not fit network {network!r} with num_features={embedding_size} "
                          f"(check --network / --embedding-size): {str(exc).splitlines()[0]} ...") from exc
    return net.eval()


def export_onnx(net: torch.nn.Module, path: Path, opset: int) -> None:
    """torch2onnx.py's export, with the batch dimension of input and output dynamic."""
    import torch

    example = torch.rand(1, 3, INPUT_SIZE, INPUT_SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with warnings.catch_warnings():
        # opset 11 needs the TorchScript exporter (the dynamo exporter starts at opset 18)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(net, (example,), str(path), input_names=["data"], output_names=["embedding"],
                          keep_initializers_as_inputs=False, opset_version=opset, dynamo=False,
                          dynamic_axes={"data": {0: "None"}, "embedding": {0: "None"}})


def check_with_onnxruntime(net: torch.nn.Module, path: Path, batch: int) -> dict:
    """Run the export and the PyTorch network on one batch; the differences."""
    import onnxruntime
    import torch

    images = torch.rand(batch, 3, INPUT_SIZE, INPUT_SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"data": images.numpy()})[0])
    with torch.no_grad():
        want = net(images).float()
    diff = (got - want).abs().max().item()
    return {"check_batch": batch, "max_abs_diff": diff, "relative_diff": diff / max(want.abs().max().item(), 1e-12),
            "min_cosine": torch.nn.functional.cosine_similarity(got, want).min().item()}


def run(args: argparse.Namespace) -> int:
    model, out = Path(args.model), output_path("OUT", args.out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        # stdout is for the JSON summary alone: whatever the user's network code prints goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            check = export_checked(args, model, tmp)
        os.replace(tmp, out)
    except ExportError as exc:
        print(f"craft-plugin export: {exc}; nothing written", file=sys.stderr)
        return 2
    finally:
        if tmp.exists():
            tmp.unlink()
    if args.json:
        print_json(check)
    else:
        print(f"{model} -> {out}: {check['network']} from {check['factory']}, {check['embedding_size']}-d embeddings, "
              f"opset {args.opset}, input data [None, 3, {INPUT_SIZE}, {INPUT_SIZE}]", file=sys.stderr)
        print(f"onnxruntime vs PyTorch on {args.check_batch} images: max |diff| {check['max_abs_diff']:.3g}, "
              f"min cosine {check['min_cosine']:.7f}", file=sys.stderr)
    return 0


def export_checked(args: argparse.Namespace, model: Path, tmp: Path) -> dict:
    """Export to ``tmp``, check it with onnxruntime, fsync it; the summary."""
    if args.check_batch < 1:
        raise ExportError(f"--check-batch {args.check_batch}: expected an integer >= 1")
    factory, network, embedding_size, source = network_factory(args)
    net = build_network(factory, network, embedding_size, load_backbone_state(model), model)
    export_onnx(net, tmp, args.opset)
    check = check_with_onnxruntime(net, tmp, args.check_batch)
    if check["relative_diff"] > TOLERANCE:
        raise ExportError(f"onnxruntime and PyTorch disagree: max |difference| {check['max_abs_diff']:.3g} is "
                          f"{check['relative_diff']:.3g} of the largest embedding value (allowed {TOLERANCE})")
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    return {"model": str(model), "onnx": str(args.out), "network": network, "factory": source,
            "embedding_size": embedding_size, "opset": args.opset, "input": ["None", 3, INPUT_SIZE, INPUT_SIZE],
            "output": ["None", embedding_size], **check}
