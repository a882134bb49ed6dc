"""Record reader and data feed throughput against mxnet, upstream and bare OpenCV, on one generated file.

Writes N records of 112x112 JPEG (quality 90) in insightface layout, then measures, in random
order through the ``.idx``: raw reads (ours: ``RecordFile.read_unpacked``, what the Dataset uses;
mxnet 1.9.1's ``MXIndexedRecordIO.read_idx`` + ``recordio.unpack``, run with the legacy venv's
python), ``cv2.imdecode`` alone on the same payloads (and simplejpeg's decoder where it is
installed), mxnet's ``mx.image.imdecode``, and our Dataset's ``__getitem__`` (read + decode + flip
+ uint8 CHW layout) inside a DataLoader worker, as training runs it, and in the main process
(``num_workers=0``, where coins are drawn one by one), then its steps timed one by one in the worker.

Whole epochs through a loader (2 workers, batch 128, shuffled, worker start-up included): the
uint8 path (items uint8, each batch normalised in the main process, the device here), the float
path (the same items normalised one by one in the workers, float32 through shared memory, as
before uint8), and upstream's ``MXFaceDataset`` + ``DataLoaderX`` on the mxnet stack, imported
from an arcface_torch checkout given with ``--upstream`` and run by ``--upstream-python``
(mxnet 1.9.1, numpy < 1.24, torchvision; CUDA calls become no-ops on a machine without a GPU);
without ``--upstream`` that row is skipped. Bytes per image: what a worker hands over through
shared memory (the collated batch's tensors). Memory: the reader's index (bytes per record) plus
one image, no whole-file reads (the file is memory-mapped). The decode, ``__getitem__`` and epoch
figures are the best of ``--repeats`` rounds, each round measuring all of them in turn, so that
other load on the machine falls on every row alike.

usage: python bench/bench_reader.py [--records N] [--repeats R] [--legacy-python PATH]
                                    [--upstream ARCFACE_TORCH_DIR] [--upstream-python PATH]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from craft_plugin.data.dataloader import DeviceLoader
from craft_plugin.data.dataset import RecFaceDataset
from craft_plugin.data.recordio import RecordFile
from craft_plugin.data.transforms import decode_bgr, label_tensor, normalise, to_chw
from craft_plugin.data.writer import write_rec
from craft_plugin._replica.synthetic import synthetic_image

BATCH, WORKERS = 128, 2

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

# One epoch; argv: arcface_torch checkout, record folder, batch size, workers. Without a GPU the CUDA
# calls DataLoaderX makes (stream, set_device, copy to an int device) become no-ops on the CPU.
UPSTREAM_EPOCHS = """
import contextlib, sys, time, types, warnings
import torch
sys.path.insert(0, sys.argv[1])
if not torch.cuda.is_available():
    torch.cuda.Stream = lambda *args, **kwargs: None
    torch.cuda.stream = lambda stream: contextlib.nullcontext()
    torch.cuda.set_device = lambda device: None
    torch.cuda.current_stream = lambda *args: types.SimpleNamespace(wait_stream=lambda stream: None)
    to = torch.Tensor.to
    torch.Tensor.to = lambda self, *a, **k: self if isinstance(k.get("device"), int) else to(self, *a, **k)
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
from dataset import DataLoaderX, MXFaceDataset
torch.set_num_threads(1)
root, batch, workers = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
dataset = MXFaceDataset(root, 0)
start, count = time.perf_counter(), 0
loader = DataLoaderX(local_rank=0, dataset=dataset, batch_size=batch, shuffle=True, num_workers=workers,
                     pin_memory=True, drop_last=True)
for images, labels in loader:
    count += len(images)
print(count / (time.perf_counter() - start))
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
    clock, totals = time.perf_counter, dict.fromkeys(("read", "decode", "coin", "layout", "label"), 0.0)
    for i in positions:
        t0 = clock()
        header, payload = dataset.records.read_unpacked(int(dataset.imgidx[i]))
        t1 = clock()
        image = decode_bgr(payload, "bench")
        t2 = clock()
        flip = dataset.flips()
        t3 = clock()
        to_chw(image, flip, bgr=True)
        t4 = clock()
        label_tensor(int(header.label))
        t5 = clock()
        for name, seconds in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            totals[name] += seconds
    return {name: seconds / len(positions) * 1e6 for name, seconds in totals.items()}


class NormalisedInWorker(Dataset):
    """The float path: each item normalised in the worker, so float32 crosses shared memory."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return normalise(image), label


def cv2_decode_rate(payloads: List[bytes]) -> float:
    start = time.perf_counter()
    for p in payloads:
        cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR)
    return rate(len(payloads), time.perf_counter() - start)


def epoch_rate(dataset: Dataset) -> float:
    """Images per second over one whole epoch, from creating the iterator (workers start) to the
    last normalised batch in the main process."""
    start, count = time.perf_counter(), 0
    for images, _ in DeviceLoader(None, dataset=dataset, batch_size=BATCH, shuffle=True, num_workers=WORKERS,
                                  drop_last=True):
        count += len(images)
    return rate(count, time.perf_counter() - start)


def shared_bytes_per_image(dataset: Dataset) -> float:
    """Bytes of one collated batch as a worker hands it over (its tensors live in shared memory), per image."""
    batch = next(iter(DataLoader(dataset, batch_size=BATCH, num_workers=1)))
    assert all(t.is_shared() for t in batch)
    return sum(t.nbytes for t in batch) / len(batch[0])


def optional_decoder(payloads: List[bytes]) -> Tuple[Optional[float], Optional[bool]]:
    """simplejpeg's libjpeg-turbo decoder, where installed: images/s and whether its pixels equal OpenCV's."""
    try:
        import simplejpeg
    except ImportError:
        return None, None
    start = time.perf_counter()
    for p in payloads:
        simplejpeg.decode_jpeg(p, "BGR")
    speed = rate(len(payloads), time.perf_counter() - start)
    same = all(np.array_equal(simplejpeg.decode_jpeg(p, "BGR"), decode_bgr(p, "bench")) for p in payloads)
    return speed, same


def run_python(python: str, script: str, *args: str) -> List[float]:
    out = subprocess.run([python, "-c", script, *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{python} failed:\n{out.stderr}")
    return [float(v) for v in out.stdout.split()]


def fmt(value: Optional[float], unit: str, missing: str) -> str:
    return missing if value is None else f"{value:>12,.0f} {unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the decode/__getitem__/epoch rows (best kept)")
    default_legacy = str(Path(__file__).resolve().parents[1] / ".venv-legacy/bin/python")
    parser.add_argument("--legacy-python", default=default_legacy)
    parser.add_argument("--upstream", help="an arcface_torch checkout (its dataset.py is imported, never copied)")
    parser.add_argument("--upstream-python", default=default_legacy,
                        help="python with upstream's stack: mxnet 1.9.1, numpy < 1.24, torch, torchvision")
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
        simplejpeg_rate, simplejpeg_same = optional_decoder(sample)
        positions = [int(np.searchsorted(dataset.imgidx, k)) for k in keys[:2000]]
        getitem_main = getitem_rate(dataset, positions)
        cv2_rate = getitem = uint8_epoch = float_epoch = 0.0
        upstream_epoch = None
        for _ in range(args.repeats):
            cv2_rate = max(cv2_rate, cv2_decode_rate(sample))
            worker_rate, stages = in_worker(partial(worker_figures, dataset, positions))
            getitem = max(getitem, worker_rate)
            uint8_epoch = max(uint8_epoch, epoch_rate(dataset))
            float_epoch = max(float_epoch, epoch_rate(NormalisedInWorker(dataset)))
            if args.upstream:
                upstream, = run_python(args.upstream_python, UPSTREAM_EPOCHS, args.upstream, tmp, str(BATCH), str(WORKERS))
                upstream_epoch = max(upstream_epoch or 0.0, upstream)
        index_bytes = records.keys.nbytes + records.offsets.nbytes
        uint8_bytes, float_bytes = shared_bytes_per_image(dataset), shared_bytes_per_image(NormalisedInWorker(dataset))
        mx_raw = mx_decode = None
        if Path(args.legacy_python).exists():
            mx_raw, mx_decode = run_python(args.legacy_python, MXNET_SIDE, rec, str(args.records))
    print(f"{args.records} records of 112x112 JPEG, {size_mb:.1f} MB, random order via .idx")
    no_legacy, no_upstream = "n/a (no legacy venv)", "n/a (no --upstream arcface_torch checkout given)"
    rows = [("raw read+unpack, ours", ours_raw, "/s", no_legacy), ("raw read+unpack, mxnet", mx_raw, "/s", no_legacy),
            ("cv2.imdecode alone", cv2_rate, "/s", ""), ("mx.image.imdecode alone", mx_decode, "/s", no_legacy),
            ("simplejpeg.decode_jpeg alone", simplejpeg_rate, "/s", "n/a (simplejpeg not installed)"),
            ("__getitem__, DataLoader worker", getitem, "/s", ""), ("__getitem__, main process", getitem_main, "/s", ""),
            (f"epoch, uint8 path ({WORKERS} workers, batch {BATCH})", uint8_epoch, "images/s", ""),
            ("epoch, float path", float_epoch, "images/s", ""),
            ("epoch, upstream MXFaceDataset+DataLoaderX", upstream_epoch, "images/s", no_upstream),
            ("shared memory, uint8 path", uint8_bytes, "B/image", ""),
            ("shared memory, float path", float_bytes, "B/image", "")]
    for name, value, unit, missing in rows:
        print(f"{name:<44}{fmt(value, unit, missing)}")
    if simplejpeg_same is not None:
        print(f"{'simplejpeg pixels equal cv2.imdecode':<44}{'yes' if simplejpeg_same else 'no':>12}")
    ratios = {"raw_vs_mxnet": ours_raw / mx_raw if mx_raw else None,
              "getitem_vs_cv2_decode": getitem / cv2_rate,
              "getitem_vs_mxnet_decode": getitem / mx_decode if mx_decode else None,
              "epoch_uint8_vs_float": uint8_epoch / float_epoch,
              "epoch_uint8_vs_upstream": uint8_epoch / upstream_epoch if upstream_epoch else None,
              "shared_bytes_uint8_vs_float": uint8_bytes / float_bytes}
    for name, value in ratios.items():
        print(f"{name:<44}{'n/a' if value is None else f'{value:>12.2f}x'}")
    print("__getitem__ stages in a worker, us per image inside the loop (cache-cold, unlike the loops above):")
    for name, value in stages.items():
        print(f"  {name:<42}{value:>12.1f} us")
    print(f"{'index memory per worker':<44}{index_bytes / args.records:>12.1f} B/record (+ one image)")
    print(json.dumps({"bench": "reader", "records": args.records, "ours_raw_per_s": round(ours_raw),
                      "mxnet_raw_per_s": mx_raw and round(mx_raw), "cv2_decode_per_s": round(cv2_rate),
                      "mxnet_decode_per_s": mx_decode and round(mx_decode),
                      "simplejpeg_decode_per_s": simplejpeg_rate and round(simplejpeg_rate),
                      "simplejpeg_equals_cv2": simplejpeg_same, "getitem_per_s": round(getitem),
                      "getitem_main_process_per_s": round(getitem_main),
                      "epoch_uint8_per_s": round(uint8_epoch), "epoch_float_per_s": round(float_epoch),
                      "epoch_upstream_per_s": upstream_epoch and round(upstream_epoch),
                      "shared_bytes_per_image_uint8": uint8_bytes, "shared_bytes_per_image_float": float_bytes,
                      **{k: v and round(v, 3) for k, v in ratios.items()},
                      "getitem_stage_us": {k: round(v, 1) for k, v in stages.items()},
                      "index_bytes_per_record": index_bytes / args.records}))


if __name__ == "__main__":
    main()
