"""``craft-plugin rec``: facts about (``info``), integrity of (``verify``) and packing of
(``pack``) arcface_torch ``.rec``/``.idx`` datasets, without mxnet."""
from __future__ import annotations

import argparse
import sys

from craft_plugin.cli import print_json
from craft_plugin.errors import RecordError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rec", help="info / verify / pack .rec datasets", description=__doc__)
    verbs = p.add_subparsers(dest="rec_command", metavar="VERB")
    verbs.required = True
    for name, help_text in (("info", "records, images, identities, image size, label layout"),
                            ("verify", "read and decode every record; non-zero exit if any is corrupt")):
        v = verbs.add_parser(name, help=help_text)
        v.add_argument("path", help="a dataset folder (train.rec + train.idx) or a .rec file")
        v.add_argument("--json", action="store_true", help="one JSON object on the last line")
        v.set_defaults(run=run_info if name == "info" else run_verify)
    v = verbs.add_parser("pack", help="pack IMAGE_FOLDER (one sub-folder per identity) into OUT")
    v.add_argument("folder")
    v.add_argument("out")
    v.set_defaults(run=run_pack)


def run_info(args: argparse.Namespace) -> int:
    from craft_plugin.data.inventory import info

    try:
        facts = info(args.path)
    except (RecordError, ValueError) as exc:
        print(f"craft-plugin rec info: {exc}", file=sys.stderr)
        return 2
    for key, value in facts.items():
        print(f"{key:<12} {value}")
    if args.json:
        print_json(facts)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from craft_plugin.data.inventory import open_records, verify

    try:
        total = len(open_records(args.path))
        bad = [r for r in tqdm(verify(args.path), total=total, desc="verify", unit="rec") if r["problem"]]
    except (RecordError, ValueError) as exc:
        print(f"craft-plugin rec verify: {exc}", file=sys.stderr)
        return 2
    for record in bad:
        print(f"corrupt record {record['key']} at byte offset {record['offset']}: {record['problem']}")
    print(f"{total} records, {len(bad)} corrupt")
    if args.json:
        print_json({"path": args.path, "records": total, "corrupt": bad})
    return 1 if bad else 0


def run_pack(args: argparse.Namespace) -> int:
    from craft_plugin.data.inventory import folder_images
    from craft_plugin.data.writer import write_rec

    try:
        out = write_rec(args.out, folder_images(args.folder))
    except (ValueError, OSError) as exc:
        print(f"craft-plugin rec pack: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}/train.rec, train.idx, property")
    return 0
