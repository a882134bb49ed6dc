"""Run ``craft-plugin eval ijb`` and upstream's ``eval_ijbc.py`` on the same model and data and compare them.

    python tools/check_ijb_upstream.py --arcface-torch PATH [--upstream-python PY] [--network mbf]
                                       [--identities 40] [--batch-size 64] [--workers 2] [--keep DIR]

Run it with a python that has craft-plugin and matplotlib (for ``eval ijb``'s ROC plot); upstream's
script runs as a subprocess in ``--upstream-python`` (default: this python), which needs what
``eval_ijbc.py`` imports except menpo: torch, numpy, OpenCV, scikit-image, scikit-learn, pandas,
matplotlib, prettytable. menpo is only used there for plot colours; a stand-in module that gives
fixed colours is written to the work folder and put first on that subprocess's path. Without a GPU
upstream's ``.cuda()`` calls are made no-ops there.

The script writes a synthetic IJB-C-layout release (craft_plugin.evaluation.synthetic) and makes it
hard enough for TAR to be neither 0 nor 1 everywhere: every crop is blurred, mixed 45% with another
crop and given noise (the landmarks stay right: the mixed-in crop is not moved). It builds a
randomly initialised ``--network`` of the checkout's ``backbones`` (512-d, as upstream's features
array has 1024 columns) and gives it BatchNorm statistics of the release's own aligned faces
(train-mode passes with cumulative averages), so that its embeddings spread out. Then upstream's
``eval_ijbc.py`` and ``craft-plugin eval ijb`` (a subprocess in this python) run on that model.pt and release
with the same batch size. Upstream prints TAR in percent with two decimals; its TAR is taken here
at full precision from its own curve (its reversed ``fpr``, ``tpr`` after the run) by its rule, the
point with the FAR nearest the target.

Prints the two stacks, the largest differences of the (N, 2, 512) features and of the pair scores,
a table of TAR per FAR (upstream, ours by the same rule, ours by the strict rule, and our scoring
of upstream's own features, which sets the embedding stage apart from the rest), then one JSON
line; exits 1 if a TAR by the nearest rule differs by more than 1e-4 or the faceness scores differ.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from craft_plugin.evaluation.ijb_embed import AlignedFaces  # noqa: E402
from craft_plugin.evaluation.ijb_meta import read_ijb  # noqa: E402
from craft_plugin.evaluation.ijb_scoring import run_scoring  # noqa: E402
from craft_plugin.evaluation.roc import FAR_TARGETS, far_key  # noqa: E402
from craft_plugin.evaluation.synthetic import write_synthetic_ijb  # noqa: E402

TAR_TOLERANCE = 1e-4

MENPO_STUB = '''"""Stand-in for menpo's colour helper: eval_ijbc.py only colours its ROC plot with it."""


def sample_colours_from_colourmap(n, name):
    return [(0.1, 0.3, 0.7)] * n
'''

# Runs in the upstream python: argv is checkout, stub folder, model, release, result dir, network,
# batch size, work folder, the FAR targets (JSON). Keeps upstream's features, faceness, scores and TAR.
UPSTREAM_DRIVER = '''
import json, runpy, sys
from pathlib import Path
import platform
import cv2, numpy as np, torch
checkout, stub, model, release, result, network, batch, work, fars = sys.argv[1:10]
sys.path[:0] = [stub, checkout]
if not torch.cuda.is_available():
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
sys.argv = ["eval_ijbc.py", "--model-prefix", model, "--image-path", release, "--result-dir", result,
            "--network", network, "--target", "IJBC", "--batch-size", batch]
g = runpy.run_path(str(Path(checkout) / "eval_ijbc.py"), run_name="__main__")
work = Path(work)
np.save(work / "upstream_features.npy", g["img_feats"])
np.save(work / "upstream_faceness.npy", g["faceness_scores"])
np.save(work / "upstream_scores.npy", np.load(g["score_save_file"]))
fpr, tpr = g["fpr"], g["tpr"]
tar = {}
for key, far in json.loads(fars).items():
    nearest = min(zip(np.abs(fpr - far), range(len(fpr))))[1]
    tar[key] = float(tpr[nearest])
stack = "numpy %s, OpenCV %s, torch %s, python %s" % (np.__version__, cv2.__version__, torch.__version__,
                                                    platform.python_version())
(work / "upstream.json").write_text(json.dumps({"tar_at_far": tar, "stack": stack}))
'''


def harden(plain: Path, release: Path, seed: int) -> None:
    """Copy ``plain`` to ``release`` with every crop blurred, mixed 45% with another crop and noised."""
    shutil.copytree(plain / "meta", release / "meta")
    (release / "loose_crop").mkdir()
    names = sorted(p.name for p in (plain / "loose_crop").iterdir())
    rng = np.random.default_rng(seed)
    for name in names:
        img = cv2.imread(str(plain / "loose_crop" / name)).astype(np.float32)
        other = cv2.imread(str(plain / "loose_crop" / names[rng.integers(len(names))])).astype(np.float32)
        other = cv2.resize(other, (img.shape[1], img.shape[0]))
        mixed = cv2.GaussianBlur(0.55 * img + 0.45 * other, (0, 0), 2.0) + rng.normal(0, 25, img.shape)
        cv2.imwrite(str(release / "loose_crop" / name), np.clip(mixed, 0, 255).astype(np.uint8),
                    [cv2.IMWRITE_JPEG_QUALITY, 90])


def calibrated_model(checkout: Path, network: str, release: Path, path: Path, faces: int = 256) -> None:
    """Save at ``path`` a random-init ``network`` whose BatchNorm statistics are those of ``faces``
    aligned faces of ``release`` (cumulative averages over train-mode forwards)."""
    from torch.utils.data import DataLoader

    sys.path.insert(0, str(checkout))
    from backbones import get_model

    meta = read_ijb(release, "IJBC", progress=False)
    torch.manual_seed(0)
    net = get_model(network, dropout=0.0, fp16=False, num_features=512)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.momentum = None
        m.reset_running_stats()
    net.train()
    chosen = np.random.default_rng(0).permutation(len(meta.names))[:faces]
    with torch.no_grad():
        for _, batch, _ in DataLoader(AlignedFaces(meta, chosen), batch_size=128):
            net((batch.float() / 255 - 0.5) / 0.5)
    torch.save(net.state_dict(), path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arcface-torch", required=True, type=Path, help="an arcface_torch checkout")
    parser.add_argument("--upstream-python", default=sys.executable,
                        help="python that runs eval_ijbc.py (default: this one)")
    parser.add_argument("--network", default="mbf", help="network of its backbones.get_model (default mbf)")
    parser.add_argument("--identities", type=int, default=40, help="synthetic identities (default 40)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch on both sides (default 64)")
    parser.add_argument("--workers", type=int, default=2, help="our DataLoader workers (default 2)")
    parser.add_argument("--keep", type=Path, help="a new or empty work folder to keep (default: a temporary one, removed)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    checkout = args.arcface_torch.resolve()
    if not (checkout / "eval_ijbc.py").is_file():
        parser.error(f"--arcface-torch {checkout}: no eval_ijbc.py there")
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep}: not empty; give a new or empty folder")
    work = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="ijb_upstream_check_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return compare(args, checkout, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def compare(args: argparse.Namespace, checkout: Path, work: Path) -> int:
    release, model = work / "IJBC", work / "model.pt"
    counts = write_synthetic_ijb(work / "plain", "IJBC", identities=args.identities, templates_per_identity=4,
                                 media_per_template=3, max_frames=3, crop=200, max_pairs=20000, seed=11)
    harden(work / "plain", release, seed=5)
    calibrated_model(checkout, args.network, release, model)

    (work / "stub" / "menpo" / "visualize").mkdir(parents=True, exist_ok=True)
    (work / "stub" / "menpo" / "__init__.py").write_text("")
    (work / "stub" / "menpo" / "visualize" / "__init__.py").write_text("")
    (work / "stub" / "menpo" / "visualize" / "viewmatplotlib.py").write_text(MENPO_STUB)
    fars = json.dumps({far_key(f): f for f in FAR_TARGETS})
    command = [args.upstream_python, "-c", UPSTREAM_DRIVER, str(checkout), str(work / "stub"), str(model),
               str(release), str(work / "upstream_result"), args.network, str(args.batch_size), str(work), fars]
    done = subprocess.run(command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        print(done.stdout[-4000:], file=sys.stderr)
        print(f"upstream eval_ijbc.py failed (exit {done.returncode}) in {args.upstream_python}", file=sys.stderr)
        return 1
    upstream = json.loads((work / "upstream.json").read_text())

    # a process of its own, as a user runs it (this one has used OpenCV's thread pool, which its
    # DataLoader workers would inherit); its --json document is read from the results file
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    ours_command = [sys.executable, "-m", "craft_plugin.cli", "eval", "ijb", str(model), "--ijb", str(release),
                    "--target", "IJBC", "--arcface-torch", str(checkout), "--network", args.network,
                    "--embedding-size", "512", "--device", "cpu", "--batch-size", str(args.batch_size),
                    "--workers", str(args.workers), "--out", str(work / "ours"), "--json"]
    status = subprocess.run(ours_command, env=env, stdout=subprocess.DEVNULL).returncode
    if status != 0:
        print(f"craft-plugin eval ijb failed (exit {status})", file=sys.stderr)
        return 1
    ours = json.loads((work / "ours" / "ijbc_results.json").read_text())
    our_features = np.load(work / "ours" / "ijbc_features.npy")
    their_features = np.load(work / "upstream_features.npy").reshape(our_features.shape)
    feature_diff = float(np.abs(our_features - their_features).max())
    score_diff = float(np.abs(np.load(work / "ours" / "ijbc_scores.npy") - np.load(work / "upstream_scores.npy")).max())
    meta = read_ijb(release, "IJBC", progress=False)
    faceness_equal = bool(np.array_equal(np.load(work / "upstream_faceness.npy"), meta.faceness))
    on_theirs = run_scoring(meta, their_features)     # our scoring of upstream's features: the stages after embedding
    theirs_score_diff = float(np.abs(on_theirs["scores"] - np.load(work / "upstream_scores.npy")).max())

    keys = [far_key(f) for f in FAR_TARGETS]
    up, near, strict, on_upstream = ({k: table[k] for k in keys} for table in (
        upstream["tar_at_far"], ours["tar_at_far"], ours["tar_at_far_strict"], on_theirs["tar_at_far"]))
    tar_diff = max(abs(up[k] - near[k]) for k in keys)
    here = f"numpy {np.__version__}, OpenCV {cv2.__version__}, torch {torch.__version__}, " \
           f"python {platform.python_version()}"
    print(f"\nsynthetic IJB-C (hardened): {counts['images']} images, {ours['templates']} templates, "
          f"{ours['pairs']} pairs ({ours['genuine']} genuine); network {args.network}, batch {args.batch_size}")
    print(f"upstream eval_ijbc.py: {upstream['stack']}")
    print(f"craft-plugin eval ijb: {here}")
    print(f"features max |diff| {feature_diff:.3g} (values up to {float(np.abs(their_features).max()):.3g}); "
          f"scores max |diff| {score_diff:.3g}; faceness equal: {faceness_equal}")
    print(f"our scoring of upstream's features: scores max |diff| {theirs_score_diff:.3g}")
    print(f"{'TAR at FAR':<26}" + "".join(f"{k:>10}" for k in keys))
    rows = (("upstream (nearest)", up), ("ours (nearest)", near), ("ours (strict)", strict),
            ("ours on upstream features", on_upstream))
    for label, table in rows:
        print(f"{label:<26}" + "".join(f"{table[k]:10.6f}" for k in keys))
    print(f"{'|upstream - ours nearest|':<26}" + "".join(f"{abs(up[k] - near[k]):10.2g}" for k in keys))
    passed = tar_diff <= TAR_TOLERANCE and faceness_equal
    print(json.dumps({"upstream_stack": upstream["stack"], "our_stack": here, "images": counts["images"],
                      "pairs": ours["pairs"], "features_max_abs_diff": feature_diff,
                      "scores_max_abs_diff": score_diff, "faceness_equal": faceness_equal,
                      "scores_max_abs_diff_our_scoring_of_upstream_features": theirs_score_diff,
                      "tar_upstream": up, "tar_ours": near, "tar_ours_strict": strict,
                      "tar_our_scoring_of_upstream_features": on_upstream,
                      "tar_max_abs_diff": tar_diff, "tolerance": TAR_TOLERANCE, "passed": passed}))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
