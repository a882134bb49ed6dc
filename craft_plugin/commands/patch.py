"""craft-plugin patch PATH: apply, check (--check) or revert (--revert) the hook patch and the
compatibility patch on an arcface_torch checkout (PATH is insightface/recognition/arcface_torch).
With --json each of the three prints one JSON document (what was found, applied or reverted) on
stdout."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from craft_plugin.cli import UsageError, human, print_json

ARCFACE_TORCH = Path("recognition") / "arcface_torch"   # where arcface_torch sits in an insightface clone
# folders a user may give instead of arcface_torch's, with where arcface_torch is inside each
NEAR_MISSES = (("the insightface clone", ARCFACE_TORCH), ("insightface's recognition folder", Path(ARCFACE_TORCH.name)))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("patch", help="apply/check/revert the arcface_torch hook and compatibility patches",
                       description=__doc__)
    p.add_argument("path", help="the arcface_torch folder (insightface/recognition/arcface_torch)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="report applicable / applied / drifted; change nothing")
    mode.add_argument("--revert", action="store_true", help="restore the original files byte for byte")
    p.add_argument("--json", action="store_true", help="print only one JSON document on stdout")
    p.set_defaults(run=run)


def checkout(value: str) -> Path:
    """The arcface_torch folder; an insightface clone's root or its recognition folder gets the
    folder to give instead."""
    path = Path(value)
    if not path.is_dir():
        raise UsageError(f"PATH {value}: no such folder; expected insightface/{ARCFACE_TORCH.as_posix()}")
    if not (path / "train_v2.py").is_file():
        for what, inside in NEAR_MISSES:
            if (path / inside / "train_v2.py").is_file():
                raise UsageError(f"PATH {value}: this is {what}; give its arcface_torch folder: "
                                 f"craft-plugin patch {path / inside}")
    return path


def run(args: argparse.Namespace) -> int:
    from craft_plugin.patching import PatchError, apply, check, revert

    path = checkout(args.path)
    out = human(args)
    try:
        if args.check:
            states = check(str(path))
            for s in states:
                print(f"{s.name}.patch: {s.state} ({', '.join(s.files)})", file=out)
                if s.state == "drifted":
                    where = f" ({s.failing_line})" if s.failing_line else ""
                    print(f"  upstream drifted in {s.failing_file}{where}; this hunk does not match:\n{s.failing_hunk}",
                          file=out)
            if args.json:
                print_json({"path": str(args.path), "action": "check", "patches": {
                    s.name: {"state": s.state, "files": s.files, "failing_file": s.failing_file,
                             "failing_line": s.failing_line, "failing_hunk": s.failing_hunk} for s in states}})
            return 1 if any(s.state == "drifted" for s in states) else 0
        action = "revert" if args.revert else "apply"
        outcome = revert(str(path)) if args.revert else apply(str(path))
    except PatchError as exc:
        print(f"craft-plugin patch: {exc}", file=sys.stderr)
        return 2
    for name, what in outcome:
        note = ": nothing to do" if what in ("already applied", "not applied") else ""
        print(f"{name}.patch {what}{note}", file=out)
    if args.json:
        print_json({"path": str(args.path), "action": action, "patches": {name: what for name, what in outcome}})
    return 0
