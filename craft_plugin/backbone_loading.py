"""The user's arcface_torch backbone with trained weights: one loader for ``craft-plugin export``
and ``craft-plugin eval``.

A model file is a ``model.pt`` (the backbone's ``state_dict``), a folder holding one, or an
arcface_torch ``checkpoint_gpu_N.pt`` (its ``state_dict_backbone``), read with
``weights_only=True`` (:func:`craft_plugin.checkpoints.load_weights`). The network comes from a
``get_model(name, dropout=0.0, fp16=False, num_features=E)`` factory, as ``torch2onnx.py`` builds
it: ``backbones.get_model`` of the user's checkout (``--arcface-torch PATH`` with ``--network NAME``
or ``--config configs/JOB.py``), or ``--module PKG.MOD:FACTORY``. This module imports only the
standard library at import time."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Tuple

from craft_plugin.cli import UsageError

if TYPE_CHECKING:
    import torch

DEFAULT_EMBEDDING_SIZE = 512    # torch2onnx.py builds every network with num_features=512


class ModelError(UsageError):
    """The model cannot be built or loaded; the message names the argument or file and what is expected."""


def add_network_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose the network: --arcface-torch, --config, --module, --network, --embedding-size."""
    parser.add_argument("--arcface-torch", metavar="PATH",
                        help="your arcface_torch checkout (its backbones.get_model) (default: none)")
    parser.add_argument("--config", help="with --arcface-torch: the run's config, configs/JOB.py "
                                         "(network, embedding_size) (default: none)")
    parser.add_argument("--module", metavar="PKG.MOD:FACTORY",
                        help="a get_model-like factory instead of a checkout's (default: none)")
    parser.add_argument("--network", help="network name passed to the factory (r50, r100, mbf, ...) "
                                          "(default: the config's network)")
    parser.add_argument("--embedding-size", type=int,
                        help=f"num_features (default: the config's embedding_size, else "
                             f"{DEFAULT_EMBEDDING_SIZE} as torch2onnx.py)")


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
            raise ModelError("--module replaces --arcface-torch/--config: give one of them")
        module_name, _, attr = args.module.partition(":")
        if not attr:
            raise ModelError(f"--module {args.module!r}: expected PKG.MOD:FACTORY, e.g. backbones:get_model")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ModelError(f"--module {args.module!r}: {exc}") from exc
        source, network = args.module, args.network
    elif args.arcface_torch:
        root = Path(args.arcface_torch).resolve()
        if not (root / "backbones" / "__init__.py").is_file():
            raise ModelError(f"--arcface-torch {args.arcface_torch}: no backbones/__init__.py there; "
                             f"expected insightface/recognition/arcface_torch")
        network = args.network
        if args.config:
            rel = Path(os.path.relpath(Path(args.config).resolve(), root)) if Path(args.config).is_absolute() \
                else Path(args.config)
            rel = rel if rel.suffix == ".py" else rel.with_name(rel.name + ".py")  # train_v2.py takes both
            if rel.parts[:1] != ("configs",) or not (root / rel).is_file():
                raise ModelError(f"--config {args.config}: expected a file configs/JOB.py inside {root}")
            cfg = import_from_checkout(root, "utils.utils_config").get_config(rel.as_posix())
            network = network or cfg.network
            embedding_size = embedding_size or cfg.embedding_size
        factory = import_from_checkout(root, "backbones").get_model
        source = f"{root / 'backbones'}:get_model"
    else:
        raise ModelError("no network: give --arcface-torch PATH with --network NAME or --config configs/JOB.py, "
                         "or --module PKG.MOD:FACTORY with --network NAME")
    if not network:
        raise ModelError("no network name: give --network NAME (or --config with --arcface-torch)")
    return factory, network, embedding_size or DEFAULT_EMBEDDING_SIZE, source


def load_backbone_state(path: Path) -> dict:
    """The backbone state_dict of a model.pt, a folder with one, or an arcface_torch checkpoint."""
    import torch

    from craft_plugin.checkpoints import UnreadableTorchFile, UntrustedFileError, load_weights

    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    try:
        state = load_weights(path)
    except (UntrustedFileError, UnreadableTorchFile) as exc:   # their messages name the file
        raise ModelError(str(exc)) from exc
    except Exception as exc:  # any other failure of torch.load: name the file, keep the reason
        raise ModelError(f"{path}: not a readable torch file with weights only ({exc})") from exc
    if isinstance(state, dict) and "state_dict_backbone" in state:
        state = state["state_dict_backbone"]
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise ModelError(f"{path}: expected a backbone state_dict (model.pt) or a checkpoint_gpu_N.pt")
    return state


def build_network(factory: Callable, network: str, embedding_size: int, state: dict, model: Path) -> torch.nn.Module:
    """``factory(network, dropout=0.0, fp16=False, num_features=embedding_size)`` with ``state``
    loaded strictly, in eval mode."""
    net = factory(network, dropout=0.0, fp16=False, num_features=embedding_size)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{model} does not fit network {network!r} with num_features={embedding_size} "
                         f"(check --network / --embedding-size): {str(exc).splitlines()[0]} ...") from exc
    return net.eval()
