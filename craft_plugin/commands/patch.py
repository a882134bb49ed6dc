"""``craft-plugin patch PATH``: apply, check (``--check``) or revert (``--revert``) the hook patch
and the compatibility patch on an arcface_torch checkout."""
from __future__ import annotations

import argparse
import sys

from craft_plugin.cli import print_json
from craft_plugin.patching import PatchError, apply, check, revert


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("patch", help="apply/check/revert the arcface_torch hook and compatibility patches",
                       description=__doc__)
    p.add_argument("path", help="the arcface_torch folder (insightface/recognition/arcface_torch)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="report applicable / applied / drifted; change nothing")
    mode.add_argument("--revert", action="store_true", help="restore the original files byte for byte")
    p.add_argument("--json", action="store_true", help="with --check: one JSON object on the last line")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.check:
            states = check(args.path)
            for s in states:
                print(f"{s.name}.patch: {s.state} ({', '.join(s.files)})")
                if s.state == "drifted":
                    print(f"  upstream drifted in {s.failing_file}; this hunk does not match:\n{s.failing_hunk}")
            if args.json:
                print_json({"path": str(args.path), "patches": {
                    s.name: {"state": s.state, "files": s.files, "failing_file": s.failing_file,
                             "failing_hunk": s.failing_hunk} for s in states}})
            return 1 if any(s.state == "drifted" for s in states) else 0
        outcome = revert(args.path) if args.revert else apply(args.path)
    except PatchError as exc:
        print(f"craft-plugin patch: {exc}", file=sys.stderr)
        return 2
    for name, what in outcome:
        note = ": nothing to do" if what in ("already applied", "not applied") else ""
        print(f"{name}.patch {what}{note}")
    return 0
