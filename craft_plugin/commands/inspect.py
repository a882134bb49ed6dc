"""craft-plugin inspect MODEL: per-filter norms and the inactive fraction of the first
3-input-channel convolution of an arcface_torch model.pt (backbone state_dict), a
checkpoint_gpu_*.pt (its state_dict_backbone) or an .onnx export (its initializers), under CRAFT's
criterion; writes a PNG of the filters. In an ONNX export of an eval-mode model the exporter
usually folds BatchNorm into the convolution, so its norms are those of the folded filters (an
inactive filter stays near zero). --criterion, --threshold and --reference-quantile default to and
are validated as config.reactivation's."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Tuple

from craft_plugin.cli import UsageError, human, output_path, print_json

OPTIONS = ("criterion", "threshold", "reference_quantile")   # the config.reactivation options inspect takes
NO_TRAINING = {"step": None, "history": None}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="first-layer filter norms and inactive fraction of a model", description=__doc__)
    p.add_argument("model", help="model.pt, checkpoint_gpu_N.pt or .onnx")
    p.add_argument("--criterion", choices=("relative", "absolute"),
                   help="a filter is inactive when its norm is below THRESHOLD times the median norm of the "
                        "strong filters (relative) or below THRESHOLD (absolute) (default: config.reactivation's)")
    p.add_argument("--threshold", type=float, help="see --criterion (default: config.reactivation's)")
    p.add_argument("--reference-quantile", type=float,
                   help="relative: the strong filters are those at or above this quantile of the norms "
                        "(default: config.reactivation's)")
    p.add_argument("--png", help="filter-grid PNG path (default: MODEL with _conv1.png)")
    p.add_argument("--json", action="store_true", help="print only one JSON document on stdout")
    p.set_defaults(run=run)


def criterion_options(args: argparse.Namespace) -> Any:
    """The given options through ``config.reactivation``'s validation; errors name the argument."""
    from craft_plugin.errors import ConfigError
    from craft_plugin.reactivation.options import parse_options

    given = {name: getattr(args, name) for name in OPTIONS if getattr(args, name) is not None}
    try:
        return parse_options(given)
    except ConfigError as exc:
        option = exc.key.rsplit(".", 1)[-1]
        raise UsageError(f"--{option.replace('_', '-')} {exc.value!r} is not allowed: expected {exc.allowed} "
                         f"(as config.reactivation.{option})") from exc


def read_tensors(path: Path) -> Tuple[list, dict]:
    """``([(name, tensor)], training)`` of a torch file or an ONNX model, tensors in file order;
    ``training`` holds what an arcface_torch checkpoint records besides weights: ``step`` (its
    ``global_step``) and ``history`` (CRAFT's checks), each None where the file has none."""
    import torch

    from craft_plugin.checkpoints import UnreadableTorchFile, UntrustedFileError, load_weights

    if not path.is_file():
        raise UsageError(f"MODEL {path}: no such file")
    if path.suffix == ".onnx":
        try:
            import onnx
            from onnx import numpy_helper
        except ImportError as exc:
            raise UsageError(f"MODEL {path}: reading .onnx needs the onnx package: "
                             f"pip install 'craft-plugin[onnx]'") from exc
        try:
            graph = onnx.load(str(path)).graph
        except Exception as exc:  # onnx raises DecodeError and others for a foreign file: name the file
            raise UsageError(f"MODEL {path}: not a readable ONNX model ({exc})") from exc
        tensors = []
        for tensor in graph.initializer:
            try:
                tensors.append((tensor.name, torch.from_numpy(numpy_helper.to_array(tensor).copy())))
            except Exception as exc:  # data cut short, dims changed, a foreign type: numpy and onnx raise several
                raise UsageError(f"MODEL {path}: damaged ONNX initializer {tensor.name!r} (dims {list(tensor.dims)}): "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
        return tensors, NO_TRAINING
    try:
        state = load_weights(path)
    except (UntrustedFileError, UnreadableTorchFile) as exc:
        raise UsageError(f"MODEL {exc}") from exc
    except Exception as exc:  # any other failure of torch.load: name the file, keep the reason
        raise UsageError(f"MODEL {path}: not a torch file (model.pt, checkpoint_gpu_N.pt) or an .onnx "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    training = dict(NO_TRAINING)
    if isinstance(state, dict) and "state_dict_backbone" in state:
        training = recorded_training(state, path)
        state = state["state_dict_backbone"]
    if not isinstance(state, dict):
        raise UsageError(f"MODEL {path}: expected a state_dict or an arcface_torch checkpoint, got {type(state).__name__}")
    return [(k, v) for k, v in state.items() if torch.is_tensor(v)], training


def recorded_training(checkpoint: dict, path: Path) -> dict:
    """``{"step", "history"}`` of an arcface_torch checkpoint, each checked to be what the plugin
    writes (an integer step; CRAFT's history a list of ``{"step": int, "revived": [int, ...]}``),
    so that a damaged or foreign entry is one error naming the file and the key."""
    from craft_plugin.plugin import CHECKPOINT_KEY

    step = checkpoint.get("global_step")
    craft = checkpoint.get(CHECKPOINT_KEY, {})
    reactivation = craft.get("reactivation", {}) if isinstance(craft, dict) else None
    history = reactivation.get("history") if isinstance(reactivation, dict) else None

    def whole(value):
        return isinstance(value, int) and not isinstance(value, bool)

    if not (step is None or whole(step)):
        raise UsageError(f"MODEL {path}: checkpoint key 'global_step' is {step!r}, not a step number")
    if not isinstance(reactivation, dict) or not (history is None or (isinstance(history, list) and all(
            isinstance(r, dict) and whole(r.get("step")) and isinstance(r.get("revived"), list)
            and all(whole(i) for i in r["revived"]) for r in history))):
        raise UsageError(f"MODEL {path}: checkpoint key {CHECKPOINT_KEY!r} does not hold the plugin's state "
                         f"(reactivation history: a list of {{'step': int, 'revived': [int, ...]}})")
    return {"step": step, "history": history}


def first_conv_weight(path: Path) -> Tuple[str, Any, dict]:
    """``(name, weight, training)`` of the first 4-D weight with 3 input channels, in file order
    (``training`` as :func:`read_tensors`)."""
    tensors, training = read_tensors(path)
    for name, tensor in tensors:
        if tensor.dim() == 4 and tensor.size(1) == 3:
            name = name.replace("module.", "", 1)
            return (name[: -len(".weight")] if name.endswith(".weight") else name), tensor.float(), training
    raise UsageError(f"MODEL {path}: no convolution with 3 input channels (a 4-D weight of shape (out, 3, kh, kw)); "
                     f"this does not look like an image backbone")


def run(args: argparse.Namespace) -> int:
    from craft_plugin.reactivation.detection import Criterion, summarize
    from craft_plugin.reactivation.grid import filter_grid, revivals, save_png

    options = criterion_options(args)
    path = Path(args.model)
    png = output_path("--png", args.png) if args.png else path.with_name(path.stem + "_conv1.png")
    name, weight, training = first_conv_weight(path)
    criterion = Criterion(options.criterion, options.threshold, options.reference_quantile)
    facts = summarize(weight, criterion)
    step = (f"at step {training['step']}" if training["step"] is not None else
            "training step: not recorded in this file (a checkpoint_gpu_N.pt records it)")
    shown = Path(*path.resolve().parts[-2:])   # e.g. baseline/model.pt: which run, without the machine's folders
    title = f"{shown}: layer {name} ({'x'.join(map(str, weight.shape))})\n{step}"
    picture = filter_grid(weight, facts["inactive"], title, revivals(training["history"] or []), criterion.in_words())
    if not save_png(png, picture):
        raise UsageError(f"--png {png}: could not write the PNG there")
    facts.update({"model": str(path), "layer": name, "png": str(png)})
    if args.json:
        print_json(facts)
        return 0
    out = human(args)
    print(f"{path}: layer {name} {tuple(weight.shape)}", file=out)
    print(f"criterion: {facts['criterion']}", file=out)
    print(f"inactive: {len(facts['inactive'])}/{weight.size(0)} ({100 * facts['fraction']:.1f}%) {facts['inactive']}",
          file=out)
    print("norms: " + " ".join(f"{n:.3g}" for n in facts["norms"]), file=out)
    print(f"filter grid: {png}", file=out)
    return 0
