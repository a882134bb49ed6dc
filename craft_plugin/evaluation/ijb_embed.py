"""Embed every image of an IJB release: decode + align in DataLoader workers, a batched forward of each
aligned face and its horizontal flip, and the features written to a float32 ``.npy`` as they come.

The features file is ``(N, 2, D)`` float32 in the meta's image order: ``[:, 0]`` the embedding of
the aligned face, ``[:, 1]`` that of its mirror image (``eval_ijbc.py``'s flip test forwards both and
sums them; the scorer decides whether to use the second). It is written through
``numpy.lib.format.open_memmap``, so the whole set is never held in memory. Beside it,
``FILE.json`` records what it holds (image count, dimension, target, the model's description and a
SHA-256 of the three meta files) so that rescoring refuses features of other data or another model.

Under ``torchrun`` (``torch.distributed`` initialised, gloo or NCCL) rank ``r`` of ``W`` embeds the
contiguous ``r``-th share of the images; at each step the ranks all-gather their rows and rank 0
writes them, so rank 0 ends with the same file a single process writes.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import cv2
import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch import distributed
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler, get_worker_info
from tqdm import tqdm

from craft_plugin.cli import UsageError
from craft_plugin.data.transforms import decode_bgr
from craft_plugin.distributed import all_gather_no_grad, rank_and_world_size
from craft_plugin.evaluation.alignment import ALIGNED_SIZE, align_face
from craft_plugin.evaluation.ijb_meta import IJBMeta, meta_sha256

SIDECAR_SUFFIX = ".json"
MODEL_KEYS_IGNORED = ("device", "batch_size")   # describe() entries that do not change the features


def load_aligned(path: Path, landmarks: np.ndarray) -> np.ndarray:
    """The aligned 112x112 RGB uint8 face of the crop at ``path``; ValueError naming the path."""
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        image = decode_bgr(buf, str(path))
    except cv2.error as exc:   # OpenCV's own assertion on a buffer it cannot take
        reason = str(exc).strip().splitlines()[-1]
        raise ValueError(f"{path}: {len(buf)} bytes that OpenCV cannot decode ({reason})") from None
    try:
        return align_face(image, landmarks)
    except (ValueError, cv2.error) as exc:
        raise ValueError(f"{path}: {str(exc).strip().splitlines()[-1]}") from None


class AlignedFaces(Dataset):
    """The aligned faces of images ``indices`` of ``meta``: ``(index, uint8 (3, 112, 112) RGB, problem)``
    where ``problem`` is "" or the one-line reason the image cannot be used (raised by the caller,
    since an exception in a DataLoader worker reaches the main process as a multi-line traceback)."""

    def __init__(self, meta: IJBMeta, indices: Sequence[int]):
        self.image_dir = meta.image_dir
        self.names = meta.names
        self.landmarks = meta.landmarks
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def aligned(self, k: int):
        """``(index, uint8 (112, 112, 3) RGB, problem)`` of item ``k``."""
        i = int(self.indices[k])
        try:
            return i, load_aligned(self.image_dir / str(self.names[i]), self.landmarks[i]), ""
        except ValueError as exc:
            return i, np.zeros((*ALIGNED_SIZE, 3), dtype=np.uint8), str(exc)

    def __getitem__(self, k: int):
        i, face, problem = self.aligned(k)
        return i, torch.from_numpy(np.ascontiguousarray(face.transpose(2, 0, 1))), problem


class AlignedBatches(AlignedFaces):
    """Item ``ks`` (a list of positions, as a BatchSampler gives them) is the whole batch
    ``(indices int64 (B,), uint8 (B, 3, 112, 112) RGB, problems)``, assembled where it is decoded: a
    worker returns one tensor, allocated in shared memory, instead of B tensors that the DataLoader
    would stack and pickle one by one."""

    def __getitem__(self, ks: Sequence[int]):
        hwc = np.empty((len(ks), *ALIGNED_SIZE, 3), dtype=np.uint8)
        indices, problems = [], []
        for j, k in enumerate(ks):
            i, hwc[j], problem = self.aligned(k)
            indices.append(i)
            problems.append(problem)
        faces = torch.empty((len(ks), 3, *ALIGNED_SIZE), dtype=torch.uint8)
        if get_worker_info() is not None:
            faces.share_memory_()   # sent to the main process as a handle, not copied into a pickle
        faces.copy_(torch.from_numpy(hwc).permute(0, 3, 1, 2))
        return torch.tensor(indices, dtype=torch.int64), faces, problems


class AlignedLoader(DataLoader):
    """A DataLoader whose workers run OpenCV on one thread, as torch already does there: a pool in
    every worker only oversubscribes the cores the workers share (the stripes of ``warpAffine`` and
    ``cvtColor`` wait on each other: 0.27 ms of CPU per image instead of 0.19 ms on 2 cores).

    The count is set in this process while the workers are forked and restored after, not in each
    worker: a fork copies OpenCV's pool state but not its threads, so a worker that reconfigured the
    copied pool could wait forever on a lock one of them held at the fork (a DataLoader of 2 workers
    forked after an in-process pass hung so). Set to 1 here, the pool is stopped before the fork."""

    def __iter__(self):
        if not self.num_workers:
            return super().__iter__()
        previous = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            return super().__iter__()
        finally:
            cv2.setNumThreads(previous)


def aligned_batches(meta: IJBMeta, indices: Sequence[int], batch_size: int, workers: int,
                    pin_memory: bool = False) -> DataLoader:
    """The aligned faces of images ``indices`` of ``meta`` in order, in batches of ``batch_size``, each
    batch decoded and aligned by one of ``workers`` worker processes (in this process with 0)."""
    dataset = AlignedBatches(meta, indices)
    return AlignedLoader(dataset, sampler=BatchSampler(SequentialSampler(dataset), batch_size, drop_last=False),
                         batch_size=None, num_workers=workers, pin_memory=pin_memory)


def forward_with_flip(embedder, faces: torch.Tensor) -> torch.Tensor:
    """``(B, 2, D)`` float32 embeddings of uint8 RGB faces ``(B, 3, H, W)`` and of their mirror images,
    in one forward of ``2B`` faces; on the embedder's device for torch models, on the CPU for ONNX."""
    b = faces.shape[0]
    if hasattr(embedder, "embed_tensor"):
        x = faces.to(embedder.device, non_blocking=True)
        both = embedder.embed_tensor(torch.cat([x, x.flip(3)]))
    else:
        hwc = faces.permute(0, 2, 3, 1).numpy()
        both = torch.from_numpy(embedder.embed(np.ascontiguousarray(np.concatenate([hwc, hwc[:, :, ::-1]]))))
    return both.view(2, b, -1).transpose(0, 1)


def shard(n: int, rank: int, world_size: int) -> range:
    """The contiguous share of ``n`` images that ``rank`` embeds."""
    per = math.ceil(n / world_size)
    return range(min(n, rank * per), min(n, (rank + 1) * per))


def _communication_device(embedder) -> torch.device:
    if distributed.get_backend() == "nccl":
        return torch.device(getattr(embedder, "device", "cuda"))
    return torch.device("cpu")


def embed_ijb(meta: IJBMeta, embedder, path: Optional[Path], batch_size: int, workers: int,
              progress: bool = True) -> None:
    """Embed every image of ``meta`` and, on rank 0, write the ``(N, 2, D)`` features to ``path``
    (other ranks pass ``path=None``). An unusable image is a UsageError naming it, on every rank."""
    rank, world_size = rank_and_world_size()
    n, dim = len(meta.names), int(embedder.embedding_size)
    mine = shard(n, rank, world_size)
    steps = math.ceil(math.ceil(n / world_size) / batch_size)   # the same on every rank
    loader = aligned_batches(meta, mine, batch_size, workers,
                             pin_memory=str(getattr(embedder, "device", "cpu")).startswith("cuda"))
    out = open_memmap(path, mode="w+", dtype=np.float32, shape=(n, 2, dim)) if rank == 0 else None
    bar = tqdm(total=n, desc=f"embed {meta.target} (decode+align in {workers} workers, flip)", unit="img",
               file=sys.stderr, disable=not progress or rank != 0, dynamic_ncols=True)
    batches = iter(loader)
    try:
        with torch.no_grad():
            for _ in range(steps):
                batch = next(batches, None)
                if batch is None:       # this rank's share is used up; the others still gather
                    indices = torch.empty(0, dtype=torch.int64)
                    feats = torch.empty(0, 2, dim, dtype=torch.float32)
                    problems = []
                else:
                    indices, faces, problems = batch
                    feats = forward_with_flip(embedder, faces).float()
                bad = next((int(i) for i, p in zip(indices, problems) if p), -1)
                if world_size > 1:
                    indices, feats, bad = _gather_step(embedder, indices, feats, bad, batch_size, dim)
                if bad >= 0:
                    raise UsageError(_problem(meta, bad))
                if out is not None:
                    # the rows go to the file as they come: one device-to-host copy per batch
                    keep = indices >= 0
                    out[indices[keep].numpy()] = feats[keep.to(feats.device)].cpu().numpy()
                bar.update(int((indices >= 0).sum()))
    except BaseException:
        bar.leave = False   # the error is the one line left on stderr
        raise
    finally:
        bar.close()
        if out is not None:
            out.flush()
            del out


def _gather_step(embedder, indices, feats, bad, batch_size, dim):
    """All ranks' rows of one step, padded to ``batch_size`` (index -1), and the first bad image."""
    device = _communication_device(embedder)
    padded_idx = torch.full((batch_size,), -1, dtype=torch.int64, device=device)
    padded_idx[:len(indices)] = indices.to(device)
    padded = torch.zeros(batch_size, 2, dim, dtype=torch.float32, device=device)
    padded[:len(feats)] = feats.to(device)
    flags = torch.tensor([bad], dtype=torch.int64, device=device)
    all_idx = all_gather_no_grad(padded_idx).cpu()
    all_feats = all_gather_no_grad(padded)
    all_bad = [int(v) for v in all_gather_no_grad(flags).cpu() if v >= 0]
    return all_idx, all_feats, (min(all_bad) if all_bad else -1)


def _problem(meta: IJBMeta, index: int) -> str:
    """Why image ``index`` cannot be used (re-derived where the failing rank was another)."""
    try:
        load_aligned(meta.image_path(index), meta.landmarks[index])
    except ValueError as exc:
        return str(exc)
    return f"{meta.image_path(index)}: could not be decoded and aligned"


# ---- the features file and its sidecar -------------------------------------------------------------

def sidecar_path(path: Path) -> Path:
    return Path(str(path) + SIDECAR_SUFFIX)


def features_record(meta: IJBMeta, embedder) -> Dict:
    """What a features file of ``meta`` embedded by ``embedder`` records beside it."""
    return {"images": int(len(meta.names)), "dim": int(embedder.embedding_size), "target": meta.target,
            "model": embedder.describe(), "meta_sha256": meta_sha256(meta.root, meta.target)}


def _model_identity(model: Dict) -> Dict:
    return {k: v for k, v in model.items() if k not in MODEL_KEYS_IGNORED}


def open_features(path: Path, expected: Dict) -> np.ndarray:
    """The saved features at ``path`` (memory-mapped), after checking its sidecar against ``expected``
    (a :func:`features_record`); a UsageError names what differs."""
    side = sidecar_path(path)
    try:
        recorded = json.loads(side.read_text())
    except FileNotFoundError:
        raise UsageError(f"--features {path}: its record {side.name} is missing, so what it holds cannot be "
                         f"checked; delete {path.name} to embed again") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"--features {path}: its record {side.name} is not readable JSON ({exc})") from None
    for key in ("images", "dim", "target", "meta_sha256"):
        if recorded.get(key) != expected[key]:
            raise UsageError(f"--features {path}: holds features of other data ({key} {recorded.get(key)!r} in "
                             f"{side.name}, this run has {expected[key]!r}); choose another file")
    if _model_identity(recorded.get("model") or {}) != _model_identity(expected["model"]):
        raise UsageError(f"--features {path}: was embedded by another model ({side.name} has "
                         f"{json.dumps(recorded.get('model'), sort_keys=True)}); choose another file")
    try:
        raw = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--features {path}: not a readable .npy file ({exc})") from None
    shape = (expected["images"], 2, expected["dim"])
    if raw.shape != shape or raw.dtype != np.float32:
        raise UsageError(f"--features {path}: holds {raw.dtype} {raw.shape}, expected float32 {shape}")
    return raw
