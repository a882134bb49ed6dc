"""The ``craft-plugin`` command line. Each verb lives in its own module under
:mod:`craft_plugin.commands` with ``add_parser(subparsers)`` and ``run(args) -> int``."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import List, Optional

# verb -> module; modules are imported on use so `craft-plugin --help` stays fast
COMMANDS = {
    "demo": "craft_plugin.commands.demo",
    "export": "craft_plugin.commands.export",
    "inspect": "craft_plugin.commands.inspect",
    "patch": "craft_plugin.commands.patch",
    "presets": "craft_plugin.commands.presets",
    "rec": "craft_plugin.commands.rec",
    "reshard": "craft_plugin.commands.reshard",
}


def print_json(obj: object) -> None:
    """Print ``obj`` as one JSON object on one line (the last line of a ``--json`` command)."""
    print(json.dumps(obj, sort_keys=True, default=str), flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="craft-plugin",
        description="CRAFT, SphereFace-R/ElasticFace and an mxnet-free reader for arcface_torch")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
