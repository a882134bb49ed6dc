"""The ``craft-plugin`` command line. Each verb lives in its own module under
:mod:`craft_plugin.commands` with ``add_parser(subparsers)`` and ``run(args) -> int``. Command
modules import only the standard library and this module at import time (torch, cv2 and numpy are
imported in ``run``), so that ``craft-plugin --help`` and parse errors stay fast.

Conventions every verb follows: with ``--json`` stdout is exactly one JSON document and human text
goes to stderr; a user error is one line on stderr naming the argument or file and what is allowed,
with exit status 2 (raise :class:`UsageError`, or return 2 after printing it). ``--help`` is plain
text: a verb module's docstring is usually its description, so it holds no RST markup, each
sub-verb has a description of its own, and every option has help (``tests/test_cli_help.py``)."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import List, Optional, TextIO

from craft_plugin.errors import ConfigError

# verb -> module
COMMANDS = {
    "bin": "craft_plugin.commands.bin",
    "demo": "craft_plugin.commands.demo",
    "eval": "craft_plugin.commands.eval",
    "export": "craft_plugin.commands.export",
    "inspect": "craft_plugin.commands.inspect",
    "patch": "craft_plugin.commands.patch",
    "presets": "craft_plugin.commands.presets",
    "rec": "craft_plugin.commands.rec",
    "reshard": "craft_plugin.commands.reshard",
}


class UsageError(ValueError):
    """A bad argument or input file; the message names it and says what is allowed."""


def shows_default(action: argparse.Action) -> bool:
    """An option taking a value whose default is set (0 included); a flag (``store_true``,
    ``store_false``: no value) shows none, its absence is the default."""
    return bool(action.option_strings) and action.nargs != 0 and action.default is not None \
        and action.default is not argparse.SUPPRESS


class HelpFormatter(argparse.HelpFormatter):
    """``--help`` that shows each option's default, taken from the option itself, unless its help
    already says it (an option without a default, or a flag, shows none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if shows_default(action) and "default" not in text:
            text += " (default %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``craft-plugin VERB: error: ...`` on stderr, exit 2; every
    verb's parser (``add_parser`` makes them of this class) shows option defaults in ``--help``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def print_json(obj: object) -> None:
    """Print ``obj`` as the one JSON document of a ``--json`` command's stdout."""
    print(json.dumps(obj, sort_keys=True, default=str), flush=True)


def human(args: argparse.Namespace) -> TextIO:
    """Where a verb's human-readable report goes: stderr under ``--json``, else stdout."""
    return sys.stderr if getattr(args, "json", False) else sys.stdout


def output_path(argument: str, value: str) -> Path:
    """``value`` as a path to write; its folder must exist (a typo must not go unnoticed)."""
    path = Path(value)
    if not path.parent.is_dir():
        raise UsageError(f"{argument} {value}: the folder {path.parent} does not exist; create it first")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="craft-plugin",
                    description="CRAFT, margin losses through Partial FC and an mxnet-free reader for arcface_torch")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (UsageError, ConfigError) as exc:
        print(f"craft-plugin {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
