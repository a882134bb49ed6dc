"""craft-plugin rec: facts about (info), integrity of (verify) and packing of (pack) arcface_torch
.rec/.idx datasets, without mxnet. info also checks the index against the file (an offset past the
end, a truncated last record)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from craft_plugin.cli import UsageError, human, output_path, print_json

LABELS = "labels.tsv"   # the identity-to-label mapping pack writes beside the dataset
PACK_DESCRIPTION = ("pack FOLDER, one sub-folder of images per identity, into OUT as an arcface_torch dataset: "
                    f"train.rec, train.idx, property and {LABELS} (label, identity folder). Labels are 0, 1, ... "
                    "in the sorted order of the folder names; an empty identity folder or an image that does not "
                    "decode is an error, and OUT must be new or empty (--force writes into a non-empty one).")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rec", help="info / verify / pack .rec datasets", description=__doc__)
    verbs = p.add_subparsers(dest="rec_command", metavar="VERB")
    verbs.required = True
    for name, help_text, runner in (("info", "records, images, identities, image size, label layout; "
                                             "the index checked against the file", run_info),
                                    ("verify", "read and decode every record; exit 1 if any is corrupt", run_verify)):
        v = verbs.add_parser(name, help=help_text, description=help_text)
        v.add_argument("path", help="a dataset folder (train.rec + train.idx) or a .rec file")
        v.add_argument("--json", action="store_true", help="print only one JSON document on stdout")
        v.set_defaults(run=runner)
    v = verbs.add_parser("pack", help="pack FOLDER (one sub-folder of images per identity) into OUT",
                         description=PACK_DESCRIPTION)
    v.add_argument("folder", help="one sub-folder per identity; labels follow the sorted folder names")
    v.add_argument("out", help="output folder (new or empty)")
    v.add_argument("--force", action="store_true", help="write into OUT even if it is not empty")
    v.set_defaults(run=run_pack)


DAMAGED = 1   # the exit status of rec info / rec verify for a damaged dataset (2: PATH is not a dataset)


def dataset_paths(path: str):
    """``(rec, idx)`` of PATH, a dataset folder or a ``.rec``; a missing path or file, or a
    ``.bin``, is a UsageError (exit 2): PATH is not a dataset, as opposed to a damaged one."""
    given = Path(path)
    if not given.exists():
        raise UsageError(f"PATH {path}: no such file or folder")
    if given.suffix == ".bin":
        raise UsageError(f"PATH {path}: a .bin verification set; use craft-plugin bin info/verify")
    rec = given / "train.rec" if given.is_dir() else given
    idx = rec.with_suffix(".idx")
    for file in (rec, idx):
        if not file.is_file():
            raise UsageError(f"PATH {path}: {file} missing: a dataset is a .rec and its .idx"
                             + (" (a folder holds train.rec and train.idx)" if given.is_dir() else ""))
    return rec, idx


def report_damage(args: argparse.Namespace, exc: Exception, facts: dict) -> int:
    """A damaged dataset: one line on stderr naming the file and offset, ``facts`` (with the line
    as ``dataset_problem``) as the JSON document under --json; exit status DAMAGED."""
    print(f"craft-plugin rec {args.rec_command}: damaged dataset: {exc}", file=sys.stderr)
    if args.json:
        print_json({**facts, "dataset_problem": str(exc)})
    return DAMAGED


def run_info(args: argparse.Namespace) -> int:
    from craft_plugin.data.inventory import info
    from craft_plugin.data.recordio import RecordFile, index_problems
    from craft_plugin.errors import RecordError

    rec, idx = dataset_paths(args.path)
    facts = {"rec": str(rec), "idx": str(idx), "file_bytes": rec.stat().st_size}
    try:
        records = RecordFile(rec, idx)
    except RecordError as exc:
        return report_damage(args, exc, facts)
    facts["records"] = len(records)
    problems = [str(problem) for problem in index_problems(records)]
    try:
        facts = info(records)
    except (RecordError, ValueError) as exc:
        if not problems:
            return report_damage(args, exc, facts)
    facts["index_problems"] = problems
    if args.json:
        print_json(facts)
    else:
        for key, value in facts.items():
            if key != "index_problems":
                print(f"{key:<12} {value}")
        print(f"{'index':<12} " + (f"does not fit the .rec: {len(problems)} problem(s), on stderr" if problems else
                                   f"checked: all {len(records)} entries point inside the .rec, the last record is whole"))
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
    return DAMAGED if problems else 0


def run_verify(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from craft_plugin.data.inventory import plan, verify
    from craft_plugin.data.recordio import RecordFile
    from craft_plugin.errors import RecordError

    rec, idx = dataset_paths(args.path)
    facts = {"path": args.path, "corrupt": []}
    try:
        records = RecordFile(rec, idx)
        facts["records"] = len(records)
        checks = plan(records)
    except RecordError as exc:
        return report_damage(args, exc, facts)
    total = len(records)
    out = human(args)
    bad = []
    with tqdm(total=total, desc="verify", unit="rec", file=sys.stderr) as bar:
        for record in verify(records, checks):
            bar.update(1)
            if record["problem"]:
                bad.append(record)
                bar.write(f"corrupt record {record['key']} at byte offset {record['offset']}: {record['problem']}",
                          file=out)
    print(f"{total} records, {len({record['key'] for record in bad})} corrupt", file=out)
    if args.json:
        print_json({"path": args.path, "records": total, "corrupt": bad})
    return DAMAGED if bad else 0


def run_pack(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from craft_plugin.data.inventory import folder_images, identity_folders
    from craft_plugin.data.writer import RecWriter

    out = output_path("OUT", args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"OUT {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise UsageError(f"OUT {out}: not empty; give a new or empty folder, or --force to write into it")
    try:
        identities = identity_folders(args.folder)
    except ValueError as exc:
        raise UsageError(f"FOLDER {exc}") from exc
    total = sum(count for _, count in identities)
    try:   # streamed: each image read, decoded once (checked, for its size) and written before the next
        with RecWriter(out) as writer:
            for file, label in tqdm(folder_images(identities), total=total, desc="pack", unit="img", file=sys.stderr):
                writer.add(file, label)
            writer.close()
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from exc
    tmp = out / f".{LABELS}.tmp-{os.getpid()}"
    tmp.write_text("label\tidentity\n" + "".join(f"{label}\t{folder.name}\n"
                                                 for label, (folder, _) in enumerate(identities)), encoding="utf-8")
    os.replace(tmp, out / LABELS)
    print(f"wrote {out}/train.rec, train.idx, property, {LABELS}: {total} images of {len(identities)} identities")
    return 0
