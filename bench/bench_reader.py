"""Record reader throughput against mxnet and bare OpenCV, on one generated file.

Writes N records of 112x112 JPEG (quality 90) in insightface layout, then measures, in random
order through the ``.idx``: raw reads (ours: ``RecordFile.read_unpacked``, what the Dataset uses; mxnet 1.9.1's
``MXIndexedRecordIO.read_idx`` + ``recordio.unpack``, run with the legacy venv's python),
``cv2.imdecode`` alone on the same payloads, mxnet's ``mx.image.imdecode``, and our Dataset's
``__getitem__`` (read + decode + flip + normalise to a tensor) inside a DataLoader worker, as
training runs it, and in the main process (``num_workers=0``, where coins are drawn one by one),
then its steps timed one by one in the worker. Memory: the reader's index
(bytes per record) plus one image, no whole-file reads (the file is memory-mapped).

usage: python bench/bench_reader.py [--records N] [--legacy-python PATH]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from craft_plugin.data.dataset import RecFaceDataset
from craft_plugin.data.recordio import RecordFile
from craft_plugin.data.transforms import decode_bgr, label_tensor, to_training_tensor
from craft_plugin.data.writer import write_rec
from craft_plugin._replica.synthetic import synthetic_image

MXNET_SIDE = """
import sys, time, random, mxnet as mx
rec, n = sys.argv[1], int(sys.argv[2])
reader = mx.recordio.MXIndexedRecordIO(rec[:-4] + '.idx', rec, 'r')
keys = list(range(1, n + 1)); random.Random(0).shuffle(keys)
start = time.perf_counter()
for k in keys:
    mx.recordio.unpack(reader.read_idx(k))
raw = len(keys) / (time.perf_counter() - start)
sample = [mx.recordio.unpack(reader.read_idx(k))[1] for k in keys[:2000]]
start = time.perf_counter()
for p in sample:
    mx.image.imdecode(p)
print(raw, len(sample) / (time.perf_counter() - start))
"""


def rate(count: int, seconds: float) -> float:
    return count / seconds


def getitem_rate(dataset: RecFaceDataset, positions: List[int]) -> float:
    start = time.perf_counter()
    for i in positions:
        dataset[i]
    return rate(len(positions), time.perf_counter() - start)


def worker_figures(dataset: RecFaceDataset, positions: List[int]) -> Tuple[float, Dict[str, float]]:
    return getitem_rate(dataset, positions), getitem_stages(dataset, positions)


class Measurement(Dataset):
    """A one-item dataset whose item is a measurement, so that it runs in a DataLoader worker."""

    def __init__(self, measure):
        self.measure = measure

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        return self.measure()


def in_worker(measure):
    """``measure()`` run inside a DataLoader worker process, where training runs ``__getitem__``."""
    return next(iter(DataLoader(Measurement(measure), batch_size=None, num_workers=1)))


def getitem_stages(dataset: RecFaceDataset, positions: List[int]) -> Dict[str, float]:
    """Where ``__getitem__``'s time goes: its steps timed one by one, interleaved as it runs them."""
    clock, totals = time.perf_counter, dict.fromkeys(("read", "decode", "coin", "transform", "label"), 0.0)
    for i in positions:
        t0 = clock()
        header, payload = dataset.records.read_unpacked(int(dataset.imgidx[i]))
        t1 = clock()
        image = decode_bgr(payload, "bench")
        t2 = clock()
        flip = dataset.flips()
        t3 = clock()
        to_training_tensor(image, flip, bgr=True)
        t4 = clock()
        label_tensor(int(header.label))
        t5 = clock()
        for name, seconds in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            totals[name] += seconds
    return {name: seconds / len(positions) * 1e6 for name, seconds in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--legacy-python", default=str(Path(__file__).resolve().parents[1] / ".venv-legacy/bin/python"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        base = [synthetic_image(0, k, 0, 112) for k in range(64)]
        write_rec(tmp, ((np.roll(base[i % 64], i // 64, axis=1), i % 1000) for i in range(args.records)))
        rec = str(Path(tmp) / "train.rec")
        size_mb = Path(rec).stat().st_size / 1e6
        records = RecordFile(rec)
        dataset = RecFaceDataset(tmp)
        keys = list(dataset.imgidx.tolist())
        np.random.default_rng(0).shuffle(keys)
        start = time.perf_counter()
        for k in keys:  # payloads are dropped as a Dataset drops them (both sides alike)
            records.read_unpacked(k)
        ours_raw = rate(len(keys), time.perf_counter() - start)
        sample = [records.read_unpacked(k)[1] for k in keys[:2000]]
        start = time.perf_counter()
        for p in sample:
            cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR)
        cv2_rate = rate(len(sample), time.perf_counter() - start)
        positions = [int(np.searchsorted(dataset.imgidx, k)) for k in keys[:2000]]
        getitem_main = getitem_rate(dataset, positions)
        getitem, stages = in_worker(partial(worker_figures, dataset, positions))
        index_bytes = records.keys.nbytes + records.offsets.nbytes
        mx_raw = mx_decode = None
        if Path(args.legacy_python).exists():
            out = subprocess.run([args.legacy_python, "-c", MXNET_SIDE, rec, str(args.records)],
                                 capture_output=True, text=True, check=True)
            mx_raw, mx_decode = map(float, out.stdout.split())
    print(f"{args.records} records of 112x112 JPEG, {size_mb:.1f} MB, random order via .idx")
    rows = [("raw read+unpack, ours", ours_raw), ("raw read+unpack, mxnet", mx_raw),
            ("cv2.imdecode alone", cv2_rate), ("mx.image.imdecode alone", mx_decode),
            ("__getitem__, DataLoader worker", getitem), ("__getitem__, main process", getitem_main)]
    for name, value in rows:
        print(f"{name:<30}{'n/a (no legacy venv)' if value is None else f'{value:>12,.0f} /s'}")
    ratios = {"raw_vs_mxnet": ours_raw / mx_raw if mx_raw else None,
              "getitem_vs_cv2_decode": getitem / cv2_rate,
              "getitem_vs_mxnet_decode": getitem / mx_decode if mx_decode else None}
    for name, value in ratios.items():
        print(f"{name:<30}{'n/a' if value is None else f'{value:>12.2f}x'}")
    print("__getitem__ stages in a worker, us per image inside the loop (cache-cold, unlike the loops above):")
    for name, value in stages.items():
        print(f"  {name:<28}{value:>12.1f} us")
    print(f"{'index memory per worker':<30}{index_bytes / args.records:>12.1f} B/record (+ one image)")
    print(json.dumps({"bench": "reader", "records": args.records, "ours_raw_per_s": round(ours_raw),
                      "mxnet_raw_per_s": mx_raw and round(mx_raw), "cv2_decode_per_s": round(cv2_rate),
                      "mxnet_decode_per_s": mx_decode and round(mx_decode), "getitem_per_s": round(getitem),
                      "getitem_main_process_per_s": round(getitem_main),
                      **{k: v and round(v, 3) for k, v in ratios.items()},
                      "getitem_stage_us": {k: round(v, 1) for k, v in stages.items()},
                      "index_bytes_per_record": index_bytes / args.records}))


if __name__ == "__main__":
    main()
