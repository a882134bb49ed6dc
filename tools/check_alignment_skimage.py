"""Compare craft_plugin's five-point alignment matrices with scikit-image's, bit for bit.

    python tools/check_alignment_skimage.py [--sets 20000] [--seed 0]

Run it in an environment that has numpy, opencv and scikit-image (the plugin does not depend on
scikit-image; upstream's eval_ijbc.py calls ``SimilarityTransform().estimate(landmarks, template)``
on float32 landmarks). Random landmark sets (scaled, rotated and shifted templates with noise, a
seventh of them mirrored so the reflection branch runs) are estimated both ways; the script prints
how many matrices differ and the largest difference, and exits 1 if any does.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from craft_plugin.evaluation.alignment import ARCFACE_TEMPLATE, alignment_matrix  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=20000, help="random landmark sets (default 20000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args()
    import skimage
    from skimage import transform

    warnings.filterwarnings("ignore")  # skimage >= 0.26 deprecates estimate() for from_estimate()
    rng = np.random.default_rng(args.seed)
    unequal, worst = 0, 0.0
    for k in range(args.sets):
        noise = rng.normal(0, 3 + 10 * (k % 3), (5, 2))
        landmarks = (ARCFACE_TEMPLATE * rng.uniform(0.5, 3) + rng.uniform(-40, 200, 2) + noise).astype(np.float32)
        if k % 7 == 0:
            landmarks[:, 0] = 300 - landmarks[:, 0]
        tform = transform.SimilarityTransform()
        tform.estimate(landmarks, ARCFACE_TEMPLATE)
        ours = alignment_matrix(landmarks)
        if not np.array_equal(tform.params[:2], ours):
            unequal += 1
            worst = max(worst, float(np.abs(tform.params[:2] - ours).max()))
    print(f"scikit-image {skimage.__version__}, numpy {np.__version__}: {unequal} of {args.sets} matrices "
          f"differ (largest difference {worst:g})")
    return 1 if unequal else 0


if __name__ == "__main__":
    sys.exit(main())
