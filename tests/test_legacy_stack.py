"""The legacy stack (mxnet 1.9.1 + numpy 1.23.5): the plugin imports and reads there, picks
upstream's data path because mxnet works; and the compatibility patch's import guard turns a
broken mxnet into ``mx = None`` so that our reader takes over."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import torch

from craft_plugin.data.dataset import RecFaceDataset
from craft_plugin.patching import load_patch

LEGACY_CHECK = textwrap.dedent("""
    import hashlib, json, sys, numpy, torch
    from easydict import EasyDict
    import craft_plugin.plugin as plugin
    from craft_plugin.data.dataset import RecFaceDataset
    from craft_plugin.data.binfile import load_bin
    from craft_plugin.data.rec_reader_feature import mxnet_problem
    ds = RecFaceDataset(sys.argv[1])
    image, label = ds[5]
    data, issame = load_bin(sys.argv[1] + "/lfw.bin", (112, 112))
    cfg = plugin.config(EasyDict(reactivation="craft"))
    torch.manual_seed(0)
    samples = hashlib.sha256(torch.stack([ds[i][0] for i in range(len(ds))]).numpy().tobytes()).hexdigest()
    print(json.dumps({"samples": samples, "numpy": numpy.__version__, "labels": [int(ds[i][1]) for i in range(len(ds))],
                      "shape": list(image.shape), "bin": list(data[0].shape), "issame": issame,
                      "mxnet_problem": mxnet_problem(), "features": [f.name for f in plugin.build_features(cfg)]}))
""")


def test_plugin_and_reader_under_numpy_1_23(legacy_python, mxnet_fixture_dir):
    out = subprocess.run([str(legacy_python), "-c", LEGACY_CHECK, str(mxnet_fixture_dir)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert facts["numpy"] == "1.23.5"
    assert facts["labels"] == [0, 0, 1, 1, 1, 2] and facts["shape"] == [3, 112, 112]
    assert facts["bin"] == [8, 3, 112, 112] and facts["issame"] == [True, False, True, False]
    assert facts["mxnet_problem"] is None  # mxnet works there: upstream's data path stays
    assert facts["features"] == ["reactivation"]
    # the training tensors (decode, flips, transform) are the same bytes on both stacks
    torch.manual_seed(0)
    dataset = RecFaceDataset(str(mxnet_fixture_dir))
    here = torch.stack([dataset[i][0] for i in range(len(dataset))]).numpy().tobytes()
    assert facts["samples"] == hashlib.sha256(here).hexdigest()


def guard_block(path: str) -> str:
    """The compatibility patch's added import guard for ``path`` (the try/except it adds)."""
    fp = next(f for f in load_patch("arcface_torch_compat") if f.path == path)
    return "".join(text for tag, text in fp.hunks[0].lines if tag == "+")


def test_compat_guard_survives_a_broken_mxnet(tmp_path):
    broken = tmp_path / "mxnet"
    broken.mkdir()
    (broken / "__init__.py").write_text("import numpy\nnumpy.bool  # what mxnet 1.9.1 does\nraise AttributeError('np.bool')\n")
    for path in ("dataset.py", "eval/verification.py"):
        code = guard_block(path) + "\nprint(mx is None)\n"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().endswith("True"), path
