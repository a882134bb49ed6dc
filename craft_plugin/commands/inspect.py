"""``craft-plugin inspect MODEL``: per-filter norms and the inactive fraction of the first
3-input-channel convolution of an arcface_torch ``model.pt`` (backbone state_dict), a
``checkpoint_gpu_*.pt`` (its ``state_dict_backbone``) or an ``.onnx`` export (its initializers),
under CRAFT's criterion; writes a PNG of the filters. In an ONNX export of an eval-mode model
the exporter usually folds BatchNorm into the convolution, so its norms are those of the folded
filters (an inactive filter stays near zero)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Tuple

import cv2
import torch

from craft_plugin.checkpoints import load_weights
from craft_plugin.cli import print_json
from craft_plugin.reactivation.detection import Criterion, summarize
from craft_plugin.reactivation.grid import filter_grid
from craft_plugin.reactivation.options import ReactivationOptions


def add_parser(sub: argparse._SubParsersAction) -> None:
    defaults = ReactivationOptions()
    p = sub.add_parser("inspect", help="first-layer filter norms and inactive fraction of a model", description=__doc__)
    p.add_argument("model", help="model.pt, checkpoint_gpu_N.pt or .onnx")
    p.add_argument("--criterion", choices=("relative", "absolute"), default=defaults.criterion)
    p.add_argument("--threshold", type=float, default=defaults.threshold)
    p.add_argument("--reference-quantile", type=float, default=defaults.reference_quantile)
    p.add_argument("--png", help="filter-grid PNG path (default: MODEL with _conv1.png)")
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")
    p.set_defaults(run=run)


def first_conv_weight(path: Path) -> Tuple[str, torch.Tensor]:
    """``(name, weight)`` of the first 4-D weight with 3 input channels, in file order."""
    if path.suffix == ".onnx":
        import onnx
        from onnx import numpy_helper

        tensors = [(t.name, torch.from_numpy(numpy_helper.to_array(t).copy())) for t in onnx.load(str(path)).graph.initializer]
    else:
        state = load_weights(path)
        if isinstance(state, dict) and "state_dict_backbone" in state:
            state = state["state_dict_backbone"]
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a state_dict or an arcface_torch checkpoint, got {type(state).__name__}")
        tensors = [(k, v) for k, v in state.items() if torch.is_tensor(v)]
    for name, tensor in tensors:
        if tensor.dim() == 4 and tensor.size(1) == 3:
            name = name.replace("module.", "", 1)
            return (name[: -len(".weight")] if name.endswith(".weight") else name), tensor.float()
    raise LookupError(f"{path}: no convolution with 3 input channels (a 4-D weight of shape (out, 3, kh, kw)); "
                      f"this does not look like an image backbone")


def run(args: argparse.Namespace) -> int:
    path = Path(args.model)
    try:
        name, weight = first_conv_weight(path)
    except (LookupError, ValueError, FileNotFoundError) as exc:
        print(f"craft-plugin inspect: {exc}", file=sys.stderr)
        return 2
    facts = summarize(weight, Criterion(args.criterion, args.threshold, args.reference_quantile))
    png = Path(args.png) if args.png else path.with_name(path.stem + "_conv1.png")
    cv2.imwrite(str(png), cv2.cvtColor(filter_grid(weight), cv2.COLOR_RGB2BGR))
    facts.update({"model": str(path), "layer": name, "png": str(png)})
    print(f"{path}: layer {name} {tuple(weight.shape)}")
    print(f"criterion: {facts['criterion']}")
    print(f"inactive: {len(facts['inactive'])}/{weight.size(0)} ({100 * facts['fraction']:.1f}%) {facts['inactive']}")
    print("norms: " + " ".join(f"{n:.3g}" for n in facts["norms"]))
    print(f"filter grid: {png}")
    if args.json:
        print_json(facts)
    return 0
