"""What `craft-plugin rec pack` holds in memory: its peak resident set size packing image folders of
two sizes (by default 2,000 and 20,000 images of 64x64 noise JPEGs, 100 per identity), each run
in a fresh child process, against a bare child with the command's imports. A streaming pack holds
one image and one identity's file names at a time, so ``extra_rss_per_image_bytes`` (the growth of
the peak above the RSS after imports, between the two sizes, divided by the images added) is near
0; a pack that keeps every image until the end grows by about one encoded image (plus its name)
per image. Linux only (it reads /proc/self/status).

    python bench/bench_rec_pack.py                 # 2,000 and 20,000 images
    python bench/bench_rec_pack.py --quick         # 200 and 2,000 (the test suite's smoke run)
    python bench/bench_rec_pack.py --tree DIR      # the craft_plugin of another checkout (DIR)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PER_IDENTITY = 100
SIZE = 64

# The command in a child process after its imports. torch's import alone peaks higher than a pack
# of tens of thousands of small images holds, so the peak is reset once the imports are done
# (writing 5 to /proc/self/clear_refs resets VmHWM, Linux >= 4.0); the child reports, on its last
# stderr line, its resident set size then and the peak (VmHWM) over the command, in KiB.
CHILD = """import sys
from craft_plugin.cli import main
import craft_plugin.commands.rec, craft_plugin.data.writer, cv2, numpy, tqdm

def status(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field))

with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")
start = status("VmRSS:")
code = main(sys.argv[1:])
print(start, status("VmHWM:"), file=sys.stderr)
sys.exit(code)
"""


def write_folders(root: Path, images: int) -> None:
    """``images`` 32x32 noise JPEGs, ``PER_IDENTITY`` per identity folder."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    for index in range(images):
        folder = root / f"id{index // PER_IDENTITY:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        ok, data = cv2.imencode(".jpg", rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
        (folder / f"{index % PER_IDENTITY:03d}.jpg").write_bytes(data.tobytes())


def rss_of(argv: list, tree: str) -> tuple:
    """``(RSS before, peak RSS during, in bytes; seconds)`` of ``craft-plugin ARGV``."""
    env = dict(os.environ, PYTHONPATH=tree) if tree else None
    start = time.perf_counter()
    # python -c puts the working folder first on sys.path: run in the tree whose craft_plugin is meant
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, env=env,
                          cwd=tree or None)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(done.stderr)
    before, peak = (int(v) * 1024 for v in done.stderr.strip().splitlines()[-1].split())
    return before, peak, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs=2, default=[2_000, 20_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--quick", action="store_true", help="200 and 2,000 images")
    parser.add_argument("--tree", help="a checkout whose craft_plugin to run (default: the installed one)")
    parser.add_argument("--write-folders", nargs=2, metavar=("DIR", "IMAGES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_folders:
        write_folders(Path(args.write_folders[0]), int(args.write_folders[1]))
        return
    if args.quick:
        args.images = [200, 2_000]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for images in args.images:
            source, out = Path(tmp) / f"faces{images}", Path(tmp) / f"out{images}"
            # written by a child, so that this process stays small
            subprocess.run([sys.executable, __file__, "--write-folders", str(source), str(images)], check=True)
            input_bytes = sum(f.stat().st_size for f in source.rglob("*.jpg"))
            before, peak, seconds = rss_of(["rec", "pack", str(source), str(out)], args.tree)
            rows.append({"images": images, "identities": -(-images // PER_IDENTITY), "input_mb": input_bytes / 2**20,
                         "seconds": seconds, "rss_before_mb": before / 2**20, "peak_rss_mb": peak / 2**20,
                         "extra_rss_mb": (peak - before) / 2**20})
    small, large = rows
    per_image = (large["extra_rss_mb"] - small["extra_rss_mb"]) * 2**20 / (large["images"] - small["images"])
    print(f"rec pack, {SIZE}x{SIZE} JPEGs, {PER_IDENTITY} per identity"
          + (f", craft_plugin from {args.tree}" if args.tree else ""))
    print(f"{'images':>8} {'identities':>10} {'input':>9} {'seconds':>8} {'RSS before':>11} {'peak RSS':>9} "
          f"{'extra':>8}")
    for row in rows:
        print(f"{row['images']:>8} {row['identities']:>10} {row['input_mb']:>7.1f}MB {row['seconds']:>8.2f} "
              f"{row['rss_before_mb']:>9.1f}MB {row['peak_rss_mb']:>7.1f}MB {row['extra_rss_mb']:>6.1f}MB")
    print(f"extra RSS growth per image added: {per_image:.0f} bytes "
          f"(mean encoded image: {large['input_mb'] * 2**20 / large['images']:.0f} bytes)")
    figures = {"bench": "rec_pack", "extra_rss_per_image_bytes": round(max(per_image, 0.0), 1),
               **{name: {k: round(v, 2) for k, v in row.items()} for name, row in (("small", small), ("large", large))}}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
