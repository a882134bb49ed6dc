"""craft-plugin bin: facts about (info) and integrity of (verify) arcface_torch .bin verification
sets, and pack PAIRS_FILE OUT to write one from aligned images. A .bin is read with the plugin's
restricted unpickler (no code runs)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from craft_plugin.cli import UsageError, human, output_path, print_json

IMAGE_SIZE = 112   # arcface_torch's aligned crops
PACK_DESCRIPTION = ("write a .bin verification set from PAIRS_FILE, the file insightface writes and arcface_torch's "
                    "load_bin reads: a protocol 2 pickle of (list of encoded images, list of bools). PAIRS_FILE has "
                    "one pair per line, 'image_a image_b same' (same: 1 or 0); relative image paths are relative to "
                    "PAIRS_FILE's folder; blank lines and lines starting with # are skipped. Every image must decode "
                    "and be an aligned crop of --image-size x --image-size pixels.")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bin", help="info / verify / pack .bin verification sets", description=__doc__)
    verbs = p.add_subparsers(dest="bin_command", metavar="VERB")
    verbs.required = True
    for name, help_text, runner in (("info", "pairs, same/different counts, image sizes", run_info),
                                    ("verify", "decode every image, check pair count and sizes; exit 1 if any "
                                               "is wrong", run_verify)):
        v = verbs.add_parser(name, help=help_text, description=help_text)
        v.add_argument("path", help="a .bin file (lfw.bin, cfp_fp.bin, ...)")
        v.add_argument("--json", action="store_true", help="print only one JSON document on stdout")
        if name == "verify":
            v.add_argument("--image-size", type=int, default=IMAGE_SIZE,
                           help="the size load_bin fits every image to (arcface_torch's verification callback "
                                "uses 112), by its rule: an image whose width differs is resized, short side to "
                                "this size; what does not come out square at this size is a problem")
        v.set_defaults(run=runner)
    v = verbs.add_parser("pack", help="write a .bin from a pairs file", description=PACK_DESCRIPTION)
    v.add_argument("pairs", help="text file: one 'image_a image_b same(0/1)' line per pair")
    v.add_argument("out", help="the .bin file to write")
    v.add_argument("--image-size", type=int, default=IMAGE_SIZE,
                   help=f"required width and height of every image (default {IMAGE_SIZE})")
    v.add_argument("--force", action="store_true", help="replace OUT if it exists")
    v.set_defaults(run=run_pack)


DAMAGED = 1   # the exit status of bin verify for a damaged .bin (2: PATH is no file)


def read(path: str) -> Tuple[list, List[bool]]:
    """``read_bin_pairs(path)``; a missing file is a UsageError. Its errors start with the path."""
    from craft_plugin.data.binfile import read_bin_pairs

    if not Path(path).is_file():
        raise UsageError(f"PATH {path}: no such file")
    return read_bin_pairs(path)


def image_facts(bins: list, path: str, image_size: Optional[int]) -> Tuple[Dict[str, int], List[Dict[str, Any]], int]:
    """``({"HxW": count}, [problems], resized)`` over every image, each decoded and, given an
    ``image_size``, fitted to it as ``load_bin`` fits it (:func:`~craft_plugin.data.binfile.fit_image`):
    a problem is then exactly an image ``load_bin`` refuses."""
    from craft_plugin.data.binfile import entry_rgb, fit_image

    sizes: Dict[str, int] = {}
    problems = []
    resized = 0
    for index, entry in enumerate(bins):
        where = f"{path}: image {index}"
        try:
            img = entry_rgb(entry, where)
            size = f"{img.shape[0]}x{img.shape[1]}"
            sizes[size] = sizes.get(size, 0) + 1
            resized += image_size is not None and fit_image(img, (image_size, image_size), where) is not img
        except ValueError as exc:
            problems.append({"image": index, "pair": index // 2, "problem": str(exc)})
    return sizes, problems, resized


def run_info(args: argparse.Namespace) -> int:
    import pickle

    try:
        bins, issame = read(args.path)
    except (ValueError, pickle.UnpicklingError) as exc:
        raise UsageError(f"PATH {exc}") from exc
    sizes, problems, _ = image_facts(bins, args.path, None)
    facts = {"path": args.path, "pairs": len(issame), "images": len(bins), "same": sum(issame),
             "different": len(issame) - sum(issame), "image_sizes": sizes, "undecodable": len(problems),
             "bytes": os.path.getsize(args.path)}
    if args.json:
        print_json(facts)
    else:
        for key, value in facts.items():
            print(f"{key:<12} {value}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    import pickle

    if args.image_size < 1:
        raise UsageError(f"--image-size {args.image_size} is not allowed: expected an integer >= 1")
    try:
        bins, issame = read(args.path)
    except (ValueError, pickle.UnpicklingError) as exc:   # the file as a whole: one line, exit DAMAGED
        print(f"craft-plugin bin verify: damaged .bin: {exc}", file=sys.stderr)
        if args.json:
            print_json({"path": args.path, "problems": [{"image": None, "pair": None, "problem": str(exc)}],
                        "ok": False})
        return DAMAGED
    sizes, problems, resized = image_facts(bins, args.path, args.image_size)
    out = human(args)
    for p in problems:
        print(p["problem"], file=out)
    print(f"{args.path}: {len(issame)} pairs, {len(bins)} images, sizes {sizes}"
          + (f" ({resized} resized to {args.image_size}x{args.image_size} as load_bin does)" if resized else "")
          + f", {len(problems)} problems", file=out)
    if args.json:
        print_json({"path": args.path, "pairs": len(issame), "images": len(bins), "image_sizes": sizes,
                    "resized": resized, "problems": problems, "ok": not problems})
    return DAMAGED if problems else 0


def read_pairs(pairs_file: Path, size: int) -> List[Tuple[bytes, bytes, bool]]:
    """The pairs of PAIRS_FILE with their images' bytes, every image checked to decode at size x size."""
    from craft_plugin.data.transforms import decode_rgb

    if not pairs_file.is_file():
        raise UsageError(f"PAIRS_FILE {pairs_file}: no such file")
    pairs = []
    for number, line in enumerate(pairs_file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{pairs_file} line {number}"
        fields = line.split()
        if len(fields) != 3 or fields[2] not in ("0", "1"):
            raise UsageError(f"{where}: {line.strip()!r}; expected 'image_a image_b same' with same 0 or 1")
        images = []
        for name in fields[:2]:
            image = (pairs_file.parent / name) if not os.path.isabs(name) else Path(name)
            if not image.is_file():
                raise UsageError(f"{where}: image {image}: no such file")
            data = image.read_bytes()
            try:
                shape = decode_rgb(data, str(image)).shape
            except ValueError as exc:
                raise UsageError(f"{where}: {exc}") from exc
            if shape[:2] != (size, size):
                raise UsageError(f"{where}: image {image} is {shape[0]}x{shape[1]}; expected aligned "
                                 f"{size}x{size} crops (--image-size)")
            images.append(data)
        pairs.append((images[0], images[1], fields[2] == "1"))
    if not pairs:
        raise UsageError(f"PAIRS_FILE {pairs_file}: no pairs in it")
    return pairs


def run_pack(args: argparse.Namespace) -> int:
    from craft_plugin.data.writer import write_bin

    out = output_path("OUT", args.out)
    if out.exists() and not args.force:
        raise UsageError(f"OUT {out}: exists; give a new path or --force to replace it")
    if args.image_size < 1:
        raise UsageError(f"--image-size {args.image_size} is not allowed: expected an integer >= 1")
    pairs = read_pairs(Path(args.pairs), args.image_size)
    write_bin(out, pairs)
    same = sum(p[2] for p in pairs)
    print(f"wrote {out}: {len(pairs)} pairs ({same} same, {len(pairs) - same} different)")
    return 0
