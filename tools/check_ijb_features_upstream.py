"""Compare the IJB features of ``craft-plugin eval ijb`` with upstream ``eval_ijbc.py``'s, bit for bit.

    python tools/check_ijb_features_upstream.py --arcface-torch PATH [--network mbf] [--identities 10]
                                                [--batch-size 8] [--workers 2]

Run it in an environment with torch, opencv and scikit-image. It writes a synthetic IJB-C-layout
release (craft_plugin.evaluation.synthetic) and a randomly initialised ``--network`` of the
checkout's ``backbones`` (BatchNorm statistics perturbed) saved as model.pt, then embeds every
image twice: with upstream's ``Embedding`` class and ``get_image_feature`` function, taken from the
checkout's ``eval_ijbc.py`` (which runs on import, so only those two definitions are executed; its
``.cuda()`` calls are made no-ops on a machine without a GPU), and with ``ijb_embed.embed_ijb``
(DataLoader workers). Upstream's features array has 1024 columns, so the network must give
512-d embeddings. Prints whether the (N, 2, 512) features and the faceness scores are identical.
"""
from __future__ import annotations

import argparse
import ast
import sys
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from craft_plugin.cli import Parser  # noqa: E402
from craft_plugin.evaluation.ijb_embed import embed_ijb  # noqa: E402
from craft_plugin.evaluation.ijb_meta import read_ijb  # noqa: E402
from craft_plugin.evaluation.models import add_model_arguments, load_embedder  # noqa: E402
from craft_plugin.evaluation.synthetic import write_synthetic_ijb  # noqa: E402


def upstream_embedding(checkout: Path, network: str, batch_size: int) -> dict:
    """The namespace holding upstream's ``Embedding`` and ``get_image_feature``."""
    from skimage import transform as trans

    sys.path.insert(0, str(checkout))
    from backbones import get_model

    if not torch.cuda.is_available():  # upstream moves the model and batches to CUDA
        torch.Tensor.cuda = lambda self, *a, **k: self
        torch.nn.Module.cuda = lambda self, *a, **k: self
    source = (checkout / "eval_ijbc.py").read_text()
    namespace = {"np": np, "torch": torch, "cv2": cv2, "trans": trans, "os": __import__("os"), "get_model": get_model,
                 "args": argparse.Namespace(batch_size=batch_size, network=network)}
    wanted = [node for node in ast.parse(source).body
              if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name in ("Embedding", "get_image_feature")]
    exec(compile(ast.Module(wanted, []), str(checkout / "eval_ijbc.py"), "exec"), namespace)
    return namespace


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arcface-torch", required=True, type=Path, help="an arcface_torch checkout")
    parser.add_argument("--network", default="mbf", help="network of its backbones.get_model (default mbf)")
    parser.add_argument("--identities", type=int, default=10, help="synthetic identities (default 10)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="our DataLoader workers (default 2)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    upstream = upstream_embedding(args.arcface_torch.resolve(), args.network, args.batch_size)
    root = Path(tempfile.mkdtemp(prefix="ijb_features_check_"))
    counts = write_synthetic_ijb(root / "IJBC", identities=args.identities, crop=200, seed=5)
    torch.manual_seed(0)
    net = upstream["get_model"](args.network, dropout=0.0, fp16=False, num_features=512)
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    torch.save(net.state_dict(), root / "model.pt")

    lines = (root / "IJBC" / "meta" / "ijbc_name_5pts_score.txt").read_text().splitlines(keepends=True)
    theirs, faceness = upstream["get_image_feature"](str(root / "IJBC" / "loose_crop"), lines, str(root / "model.pt"), 0, None)
    model_parser = Parser()
    add_model_arguments(model_parser)
    model_args = model_parser.parse_args(["--arcface-torch", str(args.arcface_torch), "--network", args.network,
                                          "--embedding-size", "512", "--device", "cpu",
                                          "--batch-size", str(2 * args.batch_size)])
    meta = read_ijb(root / "IJBC", "IJBC")
    embed_ijb(meta, load_embedder(str(root / "model.pt"), model_args), root / "features.npy", args.batch_size,
              args.workers, progress=False)
    ours = np.load(root / "features.npy")
    theirs = theirs.reshape(len(meta.names), 2, -1)
    print(f"{counts['images']} images, network {args.network}, batch {args.batch_size}, {args.workers} workers: "
          f"features identical: {np.array_equal(ours, theirs)} (largest difference "
          f"{float(np.abs(ours - theirs).max()):g} of values up to {float(np.abs(theirs).max()):.3g}); "
          f"faceness identical: {np.array_equal(faceness, meta.faceness)}")
    return 0 if np.array_equal(ours, theirs) and np.array_equal(faceness, meta.faceness) else 1


if __name__ == "__main__":
    sys.exit(main())
