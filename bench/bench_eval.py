"""``eval ijb`` throughput against upstream arcface_torch's ``eval_ijbc.py``, on one synthetic release.

(a) Images per second, on the same images (a synthetic IJB-C-layout release of ``--images`` loose
crops of ``--crop`` pixels, JPEG, of which the first ``--embed-images`` are embedded) and the same model (random-init weights saved as a state_dict):
decode + align alone, and decode + align + embed (the face and its mirror image, one batched
forward of ``--batch-size``). Ours: ``ijb_embed.aligned_batches`` (the loader ``embed_ijb`` reads) with 1
and 2 worker processes, and ``ijb_embed.embed_ijb`` (the whole stage, features file written). Upstream: its
serial loop, run by ``--upstream-python`` (scikit-image, OpenCV; CUDA calls made no-ops on a machine
without a GPU) from the ``Embedding`` class and ``get_image_feature`` of the checkout's
``eval_ijbc.py``, taken out of the script's text (the script runs on import): ``cv2.imread`` +
``Embedding.get`` per image for decode + align, ``get_image_feature`` for the whole stage. The model
is upstream's ``mbf`` (MobileFaceNet) with ``--upstream``, else the replica's ``mini`` network, and
without ``--upstream`` only our rows are measured.

(b) Scoring IJB-C's 15,658,489 template pairs (``--pairs``) of synthetic template features: 3531
gallery and 19593 probe templates of 512 dimensions, each gallery template paired with a random
~23% of the probes, listed by gallery template as IJB-C's 1:1 list, and the same pairs shuffled.
Ours: ``ijb_scoring.pair_scores``. Upstream: the ``verification`` function of the checkout's
``eval_ijbc.py`` (taken out as above) in this process; without ``--upstream``, the same loop restated
here (labelled "restated"); ``--upstream-pairs N`` times it on the first N pairs only and scales
its time linearly (it scores 100000 pairs at a time; the table says so). Peak memory: tracemalloc's peak during ``pair_scores`` less its (P,)
float64 result, at two pair counts, to show it does not grow with P.

usage: python bench/bench_eval.py [--quick] [--upstream ARCFACE_TORCH_DIR] [--upstream-python PATH]
                                  [--images N] [--embed-images N] [--crop PX] [--pairs P]
                                  [--batch-size B] [--upstream-pairs N] [--stages images,scoring]
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from craft_plugin.cli import Parser  # noqa: E402
from craft_plugin.evaluation import ijb_scoring  # noqa: E402

IJBC_PAIRS = 15_658_489
IJBC_GALLERY, IJBC_PROBES = 3531, 19593


def upstream_pieces(upstream: Path, names) -> str:
    """The source of the named top-level definitions of upstream's eval_ijbc.py (which runs on import)."""
    source = (upstream / "eval_ijbc.py").read_text()
    tree = ast.parse(source)
    found = {node.name: ast.get_source_segment(source, node) for node in tree.body
             if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names}
    missing = set(names) - set(found)
    if missing:
        raise SystemExit(f"{upstream / 'eval_ijbc.py'}: no {', '.join(sorted(missing))}")
    return "\n\n".join(found[name] for name in names)


# ---- (a) decode + align (+ embed) ---------------------------------------------------------------------

UPSTREAM_SIDE = r"""
import json, os, sys, time, types, argparse
import numpy as np, torch, cv2
upstream, release, embed_release, model_path, network, batch_size, pieces = sys.argv[1:8]
sys.path.insert(0, upstream)
if not torch.cuda.is_available():   # upstream calls .cuda(); on a CPU machine those are no-ops
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
from skimage import transform as trans
from backbones import get_model
args = argparse.Namespace(batch_size=int(batch_size), network=network)
namespace = dict(np=np, torch=torch, cv2=cv2, trans=trans, get_model=get_model, os=os, args=args)
exec(open(pieces).read(), namespace)
files = open(os.path.join(release, "meta", "ijbc_name_5pts_score.txt")).readlines()
img_path = os.path.join(release, "loose_crop")
embedding = namespace["Embedding"](model_path, (3, 112, 112), int(batch_size))
start = time.perf_counter()
for line in files:   # the per-image steps of get_image_feature's loop, without the forward
    parts = line.strip().split(" ")
    img = cv2.imread(os.path.join(img_path, parts[0]))
    lmk = np.array([float(x) for x in parts[1:-1]], dtype=np.float32).reshape((5, 2))
    embedding.get(img, lmk)
align = len(files) / (time.perf_counter() - start)
files = open(os.path.join(embed_release, "meta", "ijbc_name_5pts_score.txt")).readlines()
start = time.perf_counter()
feats, _ = namespace["get_image_feature"](os.path.join(embed_release, "loose_crop"), files, model_path, 0, None)
embed = len(files) / (time.perf_counter() - start)
print(json.dumps({"align_per_s": align, "embed_per_s": embed, "dim": int(feats.shape[1])}))
"""


def model_args(upstream: Optional[Path], batch_size: int):
    from craft_plugin.evaluation.models import add_model_arguments

    parser = Parser(prog="bench_eval")
    add_model_arguments(parser)
    if upstream is not None:
        argv = ["--arcface-torch", str(upstream), "--network", "mbf", "--embedding-size", "512"]
    else:
        argv = ["--module", "craft_plugin._replica.backbone:get_model", "--network", "mini",
                "--embedding-size", "512"]
    return parser.parse_args(argv + ["--batch-size", str(batch_size), "--device", "cpu"])


def save_random_model(path: Path, args) -> None:
    import torch
    from craft_plugin.backbone_loading import network_factory

    factory, network, embedding_size, _ = network_factory(args)
    torch.manual_seed(0)
    net = factory(network, dropout=0.0, fp16=False, num_features=embedding_size)
    torch.save(net.state_dict(), path)


def images_per_second(release: Path, n_images: int, n_embed: int, upstream: Optional[Path], upstream_python: str,
                      batch_size: int, work: Path) -> Dict[str, Optional[float]]:
    from craft_plugin.evaluation.ijb_embed import aligned_batches, embed_ijb
    from craft_plugin.evaluation.ijb_meta import read_ijb
    from craft_plugin.evaluation.models import load_embedder

    meta = read_ijb(release, "IJBC")
    args = model_args(upstream, batch_size)
    model = work / "model.pt"
    save_random_model(model, args)
    embedder = load_embedder(str(model), args)
    rows: Dict[str, Optional[float]] = {}
    for workers in (1, 2):
        loader = aligned_batches(meta, range(n_images), batch_size, workers)
        start = time.perf_counter()
        for _ in loader:
            pass
        rows[f"ours_align_{workers}w_per_s"] = n_images / (time.perf_counter() - start)
    first = read_ijb(first_images(release, work / "embed_release", n_embed), "IJBC")
    for workers in (1, 2):
        start = time.perf_counter()
        embed_ijb(first, embedder, work / f"features_{workers}.npy", batch_size, workers, progress=False)
        rows[f"ours_embed_{workers}w_per_s"] = n_embed / (time.perf_counter() - start)
    rows["upstream_align_per_s"] = rows["upstream_embed_per_s"] = None
    if upstream is not None:
        pieces = work / "upstream_pieces.py"
        pieces.write_text(upstream_pieces(upstream, ["Embedding", "get_image_feature"]))
        out = subprocess.run([upstream_python, "-c", UPSTREAM_SIDE, str(upstream), str(release),
                              str(work / "embed_release"), str(model), "mbf", str(batch_size), str(pieces)],
                             capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"upstream's loop failed under {upstream_python}:\n{out.stderr[-3000:]}")
        theirs = json.loads(out.stdout.strip().splitlines()[-1])
        rows["upstream_align_per_s"] = theirs["align_per_s"]
        rows["upstream_embed_per_s"] = theirs["embed_per_s"]
    return rows


def first_images(release: Path, out: Path, n: int) -> Path:
    """A copy of ``release`` (its image folder linked) cut to its first ``n`` images and their pairs."""
    (out / "meta").mkdir(parents=True, exist_ok=True)
    if not (out / "loose_crop").exists():
        (out / "loose_crop").symlink_to((release / "loose_crop").resolve())
    for name in ("ijbc_name_5pts_score.txt", "ijbc_face_tid_mid.txt"):
        lines = (release / "meta" / name).read_text().splitlines()[:n]
        (out / "meta" / name).write_text("\n".join(lines) + "\n")
    kept = {line.split()[1] for line in (out / "meta" / "ijbc_face_tid_mid.txt").read_text().splitlines()}
    pairs = (release / "meta" / "ijbc_template_pair_label.txt").read_text().splitlines()
    (out / "meta" / "ijbc_template_pair_label.txt").write_text(
        "\n".join(l for l in pairs if l.split()[0] in kept and l.split()[1] in kept) + "\n")
    return out


# ---- (b) pair scoring ---------------------------------------------------------------------------------

def restated_verification(template_norm_feats, unique_templates, p1, p2):
    """upstream eval_ijbc.py's ``verification`` loop, restated (used without --upstream): a template-id
    lookup table, then 100000 pairs at a time, gathered (k, 1, D) float64 rows, product, sum."""
    template2id = np.zeros((max(unique_templates) + 1, 1), dtype=int)
    for count_template, uqt in enumerate(unique_templates):
        template2id[uqt] = count_template
    score = np.zeros((len(p1),))
    total_pairs = np.array(range(len(p1)))
    batchsize = 100000
    for s in [total_pairs[i:i + batchsize] for i in range(0, len(p1), batchsize)]:
        feat1 = template_norm_feats[template2id[p1[s]]]
        feat2 = template_norm_feats[template2id[p2[s]]]
        score[s] = np.sum(feat1 * feat2, -1).flatten()
    return score


def ijbc_like_pairs(n_pairs: int, template_ids: np.ndarray, rng: np.random.Generator):
    """Gallery (first 3531) x probe templates, each gallery template with a random share of the
    probes, listed by gallery template then probe; exactly ``n_pairs`` pairs."""
    gallery, probes = template_ids[:IJBC_GALLERY], template_ids[IJBC_GALLERY:]
    density = min(1.0, 1.002 * n_pairs / (gallery.size * probes.size))
    p1, p2 = [], []
    for a in range(0, gallery.size, 256):
        rows, cols = np.nonzero(rng.random((min(256, gallery.size - a), probes.size)) < density)
        p1.append(gallery[a + rows])
        p2.append(probes[cols])
    p1, p2 = np.concatenate(p1)[:n_pairs], np.concatenate(p2)[:n_pairs]
    if p1.size < n_pairs:  # the draw fell short (tiny n): top up with random pairs
        extra = n_pairs - p1.size
        p1 = np.r_[p1, rng.choice(gallery, extra)]
        p2 = np.r_[p2, rng.choice(probes, extra)]
    return p1, p2


def timed(fn: Callable, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def extra_peak_mib(fn: Callable, n_pairs: int) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - 8 * n_pairs) / 2 ** 20


def scoring(n_pairs: int, memory_counts, chunk: int, upstream: Optional[Path], upstream_pairs: int) -> Dict[str, float]:
    rng = np.random.default_rng(0)
    n_templates = IJBC_GALLERY + IJBC_PROBES
    template_ids = np.sort(rng.choice(200_000, n_templates, replace=False))
    feats = rng.standard_normal((n_templates, 512))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    p1, p2 = ijbc_like_pairs(n_pairs, rng.permutation(template_ids), rng)
    if upstream is not None:
        namespace = {"np": np}
        exec(upstream_pieces(upstream, ["verification"]), namespace)
        theirs_fn = namespace["verification"]
    else:
        theirs_fn = restated_verification
    ours_s, ours = timed(ijb_scoring.pair_scores, template_ids, feats, p1, p2, chunk)
    shuffle = rng.permutation(n_pairs)
    ours_shuffled_s, _ = timed(ijb_scoring.pair_scores, template_ids, feats, p1[shuffle], p2[shuffle], chunk)
    m = min(upstream_pairs or n_pairs, n_pairs)
    theirs_s, theirs = timed(lambda: _quiet(theirs_fn, feats, template_ids, p1[:m], p2[:m]))
    theirs_s *= n_pairs / m  # its loop is 100000 pairs at a time: time linear in the pair count
    memory = {}
    for n in memory_counts:
        memory[n] = extra_peak_mib(lambda: ijb_scoring.pair_scores(template_ids, feats, p1[:n], p2[:n], chunk), n)
    return {"pairs": n_pairs, "ours_s": ours_s, "ours_shuffled_s": ours_shuffled_s, "upstream_s": theirs_s,
            "ratio": ours_s / theirs_s, "ratio_shuffled": ours_shuffled_s / theirs_s,
            "max_abs_diff": float(np.max(np.abs(ours[:m] - theirs))), "upstream_timed_pairs": m,
            "memory_pairs": list(memory_counts), "memory_mib": [memory[n] for n in memory_counts],
            "chunk": chunk}


def _quiet(fn, *args):
    """Upstream's loop prints a progress line per 10 chunks: kept off the table (stdout)."""
    saved = sys.stdout
    sys.stdout = open(os.devnull, "w")
    try:
        return fn(*args)
    finally:
        sys.stdout.close()
        sys.stdout = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes for the smoke test")
    parser.add_argument("--upstream", type=Path, help="an arcface_torch checkout (its eval_ijbc.py and backbones)")
    parser.add_argument("--upstream-python", default=sys.executable,
                        help="python with upstream's dependencies (scikit-image, OpenCV, torch) for its loop")
    parser.add_argument("--images", type=int, help="images of the synthetic release (default: 1536, quick 64)")
    parser.add_argument("--embed-images", type=int, help="of those, the first N embedded (default: 256, quick 32)")
    parser.add_argument("--crop", type=int, default=250, help="loose crop size in pixels")
    parser.add_argument("--pairs", type=int, help=f"pairs to score (default: {IJBC_PAIRS}, quick 200000)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per forward")
    parser.add_argument("--stages", default="images,scoring",
                        help="which parts run: images (a), scoring (b), or both")
    parser.add_argument("--upstream-pairs", type=int,
                        help="time upstream's loop on the first N pairs only and scale its time to all pairs "
                             "(its loop is linear in the pair count; default: all pairs)")
    args = parser.parse_args()
    n_images = args.images or (64 if args.quick else 1536)
    n_embed = args.embed_images or (32 if args.quick else 256)
    n_pairs = args.pairs or (200_000 if args.quick else IJBC_PAIRS)
    # quick: chunks far below the default, so that the two memory counts span several chunks
    chunk = min(ijb_scoring.PAIR_CHUNK, 1 << 15) if args.quick else ijb_scoring.PAIR_CHUNK
    memory_counts = [n_pairs // 4, n_pairs]
    load = os.getloadavg()[0]
    stages = set(args.stages.split(","))
    if not stages or stages - {"images", "scoring"}:
        parser.error(f"--stages {args.stages}: allowed are images, scoring, or images,scoring")
    figures = {"bench": "eval", "quick": args.quick, "upstream": bool(args.upstream), "load": load}
    if "images" in stages:
        figures.update(images_stage(args, n_images, n_embed, load))
    if "scoring" in stages:
        figures["scoring"] = scoring_stage(args, n_pairs, chunk, memory_counts)
    print(json.dumps(figures))


def images_stage(args, n_images: int, n_embed: int, load: float) -> dict:
    from craft_plugin.evaluation.synthetic import write_synthetic_ijb

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        release = work / "release"
        per_identity = 4 * 3 * 2  # templates x media x frames, at most
        write_synthetic_ijb(release, "IJBC", identities=max(2, -(-n_images // per_identity) + 1),
                            templates_per_identity=4, media_per_template=3, max_frames=3,
                            crop=args.crop, max_pairs=1000, one_to_n=False, seed=0)
        available = len((release / "meta" / "ijbc_name_5pts_score.txt").read_text().splitlines())
        n_images = min(n_images, available)
        n_embed = min(n_embed, n_images)
        release = first_images(release, work / "align_release", n_images)
        speed = images_per_second(release, n_images, n_embed, args.upstream, args.upstream_python, args.batch_size, work)
    model = "upstream mbf (MobileFaceNet)" if args.upstream else "replica mini"

    def fmt(v):
        return "not run (no --upstream)" if v is None else f"{v:9.1f}"

    print(f"eval ijb throughput: {n_images} images ({args.crop} px JPEG loose crops; the first {n_embed} embedded), "
          f"model {model} random-init, batch {args.batch_size}, CPU; load average {load:.1f} at the start")
    print(f"{'stage':<38}{'ours 1 worker':>16}{'ours 2 workers':>16}{'upstream serial':>26}")
    print(f"{'decode + align (images/s)':<38}{speed['ours_align_1w_per_s']:16.1f}{speed['ours_align_2w_per_s']:16.1f}"
          f"{fmt(speed['upstream_align_per_s']):>26}")
    print(f"{'decode + align + embed (images/s)':<38}{speed['ours_embed_1w_per_s']:16.1f}"
          f"{speed['ours_embed_2w_per_s']:16.1f}{fmt(speed['upstream_embed_per_s']):>26}")
    ratios = {}
    if speed["upstream_align_per_s"]:
        ratios = {"align_2w_vs_upstream": speed["ours_align_2w_per_s"] / speed["upstream_align_per_s"],
                  "embed_2w_vs_upstream": speed["ours_embed_2w_per_s"] / speed["upstream_embed_per_s"]}
        print(f"{'ours with 2 workers / upstream':<38}{'':16}{'':16}"
              f"{'align %.2fx, embed %.2fx' % (ratios['align_2w_vs_upstream'], ratios['embed_2w_vs_upstream']):>26}")
    return {"images": n_images, "embed_images": n_embed, **speed, **ratios}


def scoring_stage(args, n_pairs: int, chunk: int, memory_counts) -> dict:
    score = scoring(n_pairs, memory_counts, chunk, args.upstream, args.upstream_pairs)
    theirs = "upstream eval_ijbc.py" if args.upstream else "upstream's loop restated"
    print(f"scoring {score['pairs']} pairs (3531 gallery x 19593 probe templates, 512-d), against {theirs}; "
          f"load average {os.getloadavg()[0]:.1f} after:")
    print(f"{'':<38}{'ours':>16}{'ours shuffled':>16}{theirs:>26}")
    scaled = "" if score["upstream_timed_pairs"] == n_pairs else f" (scaled from {score['upstream_timed_pairs']})"
    print(f"{'time (s)' + scaled:<38}{score['ours_s']:16.2f}{score['ours_shuffled_s']:16.2f}{score['upstream_s']:26.2f}")
    print(f"{'time / upstream':<38}{score['ratio']:16.3f}{score['ratio_shuffled']:16.3f}{1.0:26.3f}")
    print(f"largest |score difference| ours vs upstream: {score['max_abs_diff']:.2e}")
    print("scoring memory besides the result (tracemalloc peak - 8 B x pairs): "
          + ", ".join(f"{n} pairs {m:.1f} MiB" for n, m in zip(score["memory_pairs"], score["memory_mib"]))
          + f" (chunk {score['chunk']} pairs)")
    return score


if __name__ == "__main__":
    main()
