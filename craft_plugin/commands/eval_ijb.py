"""craft-plugin eval ijb MODEL --ijb DIR --target IJBB|IJBC: what arcface_torch's eval_ijbc.py computes,
number for number, without mxnet, menpo, pandas or scikit-image.

DIR is an IJB release as eval_ijbc.py reads it: loose_crop/ and meta/<t>_name_5pts_score.txt,
meta/<t>_face_tid_mid.txt, meta/<t>_template_pair_label.txt (<t> = ijbb or ijbc), plus the 1:N
lists when present. Each crop is aligned to arcface's 112x112 template by its five landmarks (in
DataLoader workers), embedded with its mirror image, and the features are saved; then image
features (flip-sum, norm score, detector score), media-then-template aggregation, cosine pair
scores, and TAR at FAR 1e-6 ... 1e-1 by upstream's nearest-FPR rule and by the strict rule
(largest TAR with FAR <= the target), plus TPIR at FPIR and rank-k when the 1:N lists exist.

Written under --out (all files replaced together; nothing on error): <t>_scores.npy,
<t>_pairs.npz (p1, p2, labels), <t>_results.json (the --json document), <t>_roc.png and the
features (<t>_features.npy and its .json record, or --features FILE). With --features FILE that
already exists, the run rescores from it without reading any image (its record must match the
meta files and the model). Under torchrun each rank embeds its share; rank 0 scores and writes."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from craft_plugin.cli import UsageError, human, print_json
from craft_plugin.evaluation.models import add_model_arguments

DEFAULT_WORKERS = min(4, os.cpu_count() or 1)   # decode+align processes: up to 4, no more than the cores
STAGING_PREFIX = ".partial."


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ijb", help="IJB-B / IJB-C 1:1 TAR at FAR (both rules) and 1:N identification",
                       description=__doc__)
    p.add_argument("model", help="model.pt, a folder holding model.pt, checkpoint_gpu_N.pt, or an .onnx")
    p.add_argument("--ijb", required=True, metavar="DIR", help="the IJB release folder (meta/ and loose_crop/)")
    p.add_argument("--target", required=True, choices=["IJBB", "IJBC"], help="which protocol of DIR to run")
    add_model_arguments(p)
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, metavar="N",
                   help="DataLoader worker processes that decode and align the crops (0: in this process)")
    p.add_argument("--no-flip", dest="flip", action="store_false",
                   help="use only the aligned image's embedding, not the sum with its mirror image's")
    p.add_argument("--no-norm-score", dest="norm_score", action="store_false",
                   help="L2-normalise each image feature before aggregation (drop the embedding norm)")
    p.add_argument("--no-detector-score", dest="detector_score", action="store_false",
                   help="do not weight image features by the detector's faceness score")
    p.add_argument("--out", metavar="DIR", help="folder for the results (default: eval-ijbb or eval-ijbc here)")
    p.add_argument("--features", metavar="FILE",
                   help="features .npy: rescore from it if it exists, else write it there "
                        "(default: <t>_features.npy under --out, always recomputed)")
    p.add_argument("--json", action="store_true", help="print only the results document on stdout")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torch import distributed

    joined = _join_torchrun(args)
    try:
        return _evaluate(args)
    finally:
        if joined:
            distributed.destroy_process_group()


def _join_torchrun(args: argparse.Namespace) -> bool:
    """Under torchrun (WORLD_SIZE > 1) without a process group yet: join one (NCCL for CUDA, else gloo)."""
    import torch
    from torch import distributed

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or distributed.is_initialized():
        return False
    cuda = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    distributed.init_process_group("nccl" if cuda else "gloo")
    return True


def _staging(path: Path) -> Path:
    return path.with_name(STAGING_PREFIX + path.name)


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from craft_plugin.distributed import rank_and_world_size
    from craft_plugin.evaluation.alignment import ALIGNED_SIZE
    from craft_plugin.evaluation.ijb_embed import embed_ijb, features_record, open_features, sidecar_path
    from craft_plugin.evaluation.ijb_meta import read_ijb
    from craft_plugin.evaluation.ijb_scoring import run_scoring
    from craft_plugin.evaluation.models import load_embedder
    from craft_plugin.evaluation.roc_plot import require_matplotlib, write_roc_plot
    from craft_plugin.staged_files import replace_together

    rank, _ = rank_and_world_size()
    if args.workers < 0:
        raise UsageError(f"--workers {args.workers}: expected an integer >= 0")
    if rank == 0:
        require_matplotlib()
    t = args.target.lower()
    meta = read_ijb(args.ijb, args.target, progress=rank == 0)
    out = Path(args.out or f"eval-{t}")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    if not out.exists() and not out.parent.is_dir():
        raise UsageError(f"--out {out}: the folder {out.parent} does not exist; create it first")
    features = Path(args.features) if args.features else out / f"{t}_features.npy"
    if features.suffix != ".npy":
        raise UsageError(f"--features {features}: expected a .npy file name")
    if args.features and not features.parent.is_dir():
        raise UsageError(f"--features {features}: the folder {features.parent} does not exist; create it first")
    rescore = bool(args.features) and features.exists()
    if not rescore and not meta.image_dir.is_dir():
        raise UsageError(f"{meta.image_dir}: missing; the release's face crops live there")
    embedder = load_embedder(args.model, args)
    if tuple(embedder.input_size) != ALIGNED_SIZE:
        raise UsageError(f"{args.model}: takes {embedder.input_size[0]}x{embedder.input_size[1]} inputs; the IJB "
                         f"protocol aligns crops to arcface's {ALIGNED_SIZE[0]}x{ALIGNED_SIZE[1]} template")
    record = features_record(meta, embedder)
    raw = open_features(features, record) if rescore else None
    if rank != 0 and rescore:
        return 0

    created = rank == 0 and not out.exists()
    if created:
        out.mkdir()
    try:
        with replace_together() as staged:
            if not rescore:
                tmp = _staging(features)
                if rank == 0:
                    staged.append((tmp, features))
                embed_ijb(meta, embedder, tmp if rank == 0 else None, args.batch_size, args.workers)
                if rank != 0:
                    return 0
                raw = np.load(tmp, mmap_mode="r")
                _stage_json(staged, sidecar_path(features), record)
            print(f"scoring: {len(meta.names)} images into templates, {meta.p1.size} pairs", file=sys.stderr)
            result = run_scoring(meta, raw, args.flip, args.norm_score, args.detector_score)
            scores, curve = result.pop("scores"), result.pop("roc")
            files = {"scores": out / f"{t}_scores.npy", "pairs": out / f"{t}_pairs.npz",
                     "features": features, "roc_plot": out / f"{t}_roc.png"}
            document = {"kind": "ijb", "model": embedder.describe(), **result,
                        "files": {k: str(v.resolve()) for k, v in files.items()}}
            _stage_npy(staged, files["scores"], scores)
            tmp = _staging(files["pairs"])
            staged.append((tmp, files["pairs"]))
            with open(tmp, "wb") as handle:
                np.savez(handle, p1=meta.p1, p2=meta.p2, labels=meta.labels)
            tmp = _staging(files["roc_plot"])
            staged.append((tmp, files["roc_plot"]))
            write_roc_plot(tmp, {**result, "roc": curve}, title=f"ROC on {args.target}: {Path(args.model).name}")
            _stage_json(staged, out / f"{t}_results.json", document)
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    _report(document, human(args), rescored=rescore)
    if args.json:
        print_json(document)
    return 0


def _stage_json(staged, path: Path, obj) -> None:
    tmp = _staging(path)
    staged.append((tmp, path))
    tmp.write_text(json.dumps(obj, sort_keys=True, indent=1, default=str) + "\n")


def _stage_npy(staged, path: Path, array) -> None:
    import numpy as np

    tmp = _staging(path)
    staged.append((tmp, path))
    with open(tmp, "wb") as handle:
        np.save(handle, array)


def _report(document: dict, stream, rescored: bool) -> None:
    from craft_plugin.evaluation.roc import FAR_TARGETS, far_key

    keys = [far_key(f) for f in FAR_TARGETS]
    source = "rescored from saved features" if rescored else "embedded"
    print(f"{document['target']}: {document['images']} images ({source}), {document['templates']} templates, "
          f"{document['pairs']} pairs; options {document['options']}", file=stream)
    print("TAR (%) at FAR    " + "".join(f"{k:>9}" for k in keys), file=stream)
    for label, key in (("nearest (upstream)", "tar_at_far"), ("strict FAR<=target", "tar_at_far_strict")):
        print(f"{label:<18}" + "".join(f"{100 * document[key][k]:9.2f}" for k in keys), file=stream)
    ident = document.get("identification")
    if ident:
        def percent(value):
            return "n/a" if value is None else f"{100 * value:.2f}"

        points = sorted(ident["tpir_at_fpir"].items(), key=lambda kv: float(kv[0]))
        tpir = ", ".join(f"{percent(v)} at FPIR {k}" for k, v in points)
        ranks = ", ".join(f"rank-{k.split('_')[1]} {percent(ident[k])}" for k in ("rank_1", "rank_5", "rank_10"))
        print(f"1:N (mixed probes, both galleries): TPIR (%) {tpir}; {ranks}", file=stream)
    for name, path in document["files"].items():
        print(f"{name}: {path}", file=stream)
