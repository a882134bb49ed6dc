"""Compare ``craft-plugin eval bin`` with arcface_torch's own ``eval/verification.py`` on one .bin.

    python tools/check_bin_eval_upstream.py path/to/insightface/recognition/arcface_torch [--pairs 600]

Run it with a python that has craft-plugin and what verification.py needs besides mxnet:
torch, numpy, scikit-learn, scipy. mxnet is only used by upstream's ``load_bin``; both sides here
read the .bin with the plugin's reader (a stand-in module is put in place of a missing mxnet).
The script writes a .bin of synthetic identities (tests/eval_model_helpers.py) and two small
deterministic models, runs ``craft-plugin eval bin`` on them, and upstream's ``test()`` (accuracy,
std, XNorm) and ``evaluate()`` (VAL at FAR 1e-3) on the same model and data.

SciPy 1.9 and later refuse upstream's ``interp1d(far_train, thresholds, kind="slinear")`` ("Expect
x to not have duplicates"): there, the script shows that ``test()`` fails and then puts back what
SciPy up to 1.8 built for that call (a degree-1 B-spline with knots (x0, x0, ..., xn, xn)). It
prints a table and one JSON line, and exits 1 if accuracy, std or a fold accuracy differs at all, or
XNorm, VAL or FAR by more than 1e-12.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import sys
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def upstream_verification(checkout: Path):
    """The checkout's eval/verification.py as a module (mxnet stubbed when it cannot be imported)."""
    try:
        import mxnet  # noqa: F401
    except Exception:
        stub = types.ModuleType("mxnet")
        stub.ndarray = stub.nd = None   # an unpatched checkout imports ndarray, a patched one mx.nd
        sys.modules["mxnet"] = stub
    spec = importlib.util.spec_from_file_location("upstream_verification", checkout / "eval" / "verification.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scipy_1_8_slinear(x, y, kind):
    """What ``interp1d(x, y, kind="slinear")`` was in SciPy <= 1.8, ties in x allowed."""
    import numpy as np
    from scipy.interpolate import BSpline

    assert kind == "slinear"
    return BSpline(np.r_[x[0], x, x[-1]], y, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arcface_torch", type=Path, help="your insightface/recognition/arcface_torch")
    parser.add_argument("--pairs", type=int, default=600, help="pairs in the .bin (default 600)")
    args = parser.parse_args()
    import numpy as np
    import scipy
    import sklearn
    import sklearn.preprocessing
    import torch

    from craft_plugin.cli import main as cli
    from craft_plugin.data.binfile import load_bin
    from eval_model_helpers import MODULE, face_images, trained_tiny, write_bin

    verification = upstream_verification(args.arcface_torch)
    work = Path(tempfile.mkdtemp(prefix="bin-eval-check-"))
    write_bin(work / "lfw.bin", *face_images(args.pairs, seed=11, blur=50))
    data = load_bin(str(work / "lfw.bin"), (112, 112))
    rows, failed, note = [], False, ""
    for seed in (0, 1):
        net = trained_tiny(seed=seed)
        torch.save(net.state_dict(), work / f"m{seed}.pt")
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            assert cli(["eval", "bin", str(work / f"m{seed}.pt"), "--data", str(work), "--targets", "lfw",
                        *MODULE, "--json"]) == 0
        ours = json.loads(out.getvalue())["targets"]["lfw"]
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                _, _, acc, std, xnorm, views = verification.test(data, net, 10, 10)
            except ValueError as exc:
                note = f"upstream test() fails with SciPy {scipy.__version__}: {exc}; SciPy 1.8's slinear put back"
                verification.interpolate = types.SimpleNamespace(interp1d=scipy_1_8_slinear)
                _, _, acc, std, xnorm, views = verification.test(data, net, 10, 10)
            emb = sklearn.preprocessing.normalize(views[0] + views[1])
            _, _, folds, val, val_std, far = verification.evaluate(emb, data[1], nrof_folds=10)
        exact = ours["accuracy"] == acc and ours["std"] == std and ours["fold_accuracy"] == [float(a) for a in folds]
        close = max(abs(ours["xnorm"] - xnorm), abs(ours["val_at_far_1e-3"] - val), abs(ours["val_std"] - val_std),
                    abs(ours["far"] - far))
        failed |= not exact or close > 1e-12
        rows.append({"model": seed, "accuracy": [ours["accuracy"], float(acc)], "std": [ours["std"], float(std)],
                     "val": [ours["val_at_far_1e-3"], float(val)], "accuracy_std_folds_equal": exact,
                     "largest_other_difference": close})
    print(f"numpy {np.__version__}, scipy {scipy.__version__}, scikit-learn {sklearn.__version__}, "
          f"torch {torch.__version__}; {args.pairs} pairs")
    if note:
        print(note)
    print(f"{'model':<7}{'accuracy ours / upstream':>28}{'std ours / upstream':>28}{'VAL ours / upstream':>28}"
          f"{'acc+std+folds equal':>21}{'max |diff| xnorm,VAL,FAR':>26}")
    for r in rows:
        print(f"{r['model']:<7}{r['accuracy'][0]:>14.6f} / {r['accuracy'][1]:<11.6f}{r['std'][0]:>14.6f} / "
              f"{r['std'][1]:<11.6f}{r['val'][0]:>14.6f} / {r['val'][1]:<11.6f}{str(r['accuracy_std_folds_equal']):>21}"
              f"{r['largest_other_difference']:>26.3g}")
    print(json.dumps({"rows": rows, "scipy": scipy.__version__, "note": note, "passed": not failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
