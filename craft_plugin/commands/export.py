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
import inspect
import os
import sys
import warnings
from pathlib import Path

from craft_plugin.backbone_loading import (ModelError, add_network_arguments, build_network, load_backbone_state,
                                           network_factory)
from craft_plugin.cli import output_path, print_json

OPSET = 11                      # torch2onnx.py's opset
INPUT_SIZE = 112                # arcface_torch's aligned crops
CHECK_BATCH = 8
TOLERANCE = 1e-4                # onnxruntime vs PyTorch: max |difference| / max |embedding|


class ExportError(ModelError):
    """The export cannot go ahead; the message names the argument or file and what is expected."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained backbone to ONNX for insightface", description=__doc__)
    p.add_argument("model", help="model.pt, a folder holding model.pt, or checkpoint_gpu_N.pt")
    p.add_argument("out", help="the .onnx file to write")
    add_network_arguments(p)
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET}, as torch2onnx.py)")
    p.add_argument("--check-batch", type=int, default=CHECK_BATCH,
                   help=f"batch size of the onnxruntime check (default {CHECK_BATCH})")
    p.add_argument("--json", action="store_true", help="print only a JSON summary on stdout")
    p.set_defaults(run=run)


def export_onnx(net: torch.nn.Module, path: Path, opset: int) -> None:
    """torch2onnx.py's export, with the batch dimension of input and output dynamic."""
    import torch

    example = torch.rand(1, 3, INPUT_SIZE, INPUT_SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    # opset 11 needs the TorchScript exporter (the dynamo exporter starts at opset 18): asked for by
    # dynamo=False where torch has that choice (>= 2.5); before, it is the only exporter
    choice = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(net, (example,), str(path), input_names=["data"], output_names=["embedding"],
                          keep_initializers_as_inputs=False, opset_version=opset,
                          dynamic_axes={"data": {0: "None"}, "embedding": {0: "None"}}, **choice)


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
    except ModelError as exc:
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
