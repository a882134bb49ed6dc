"""Check craft-plugin against your own arcface_torch checkout: patch a copy of it, train upstream's
``train_v2.py`` on it for a few steps on the CPU with CRAFT and a margin loss of ours enabled, and
check what came out. Nothing outside this repository and the checkout is needed.

    python tools/upstream_check.py path/to/insightface/recognition/arcface_torch [--nproc 2]

The python running this needs craft-plugin installed (``pip install -e .``) and what upstream's
``train_v2.py`` imports besides torch: scikit-learn, scipy, easydict, tensorboard (mxnet is
optional; without it the plugin's reader takes over, with it upstream's mxnet path reads the
data). Steps, all under a new work folder (``--work``, default a fresh temporary folder):

1. Two copies of the checkout; in one, ``craft-plugin patch`` then ``--revert`` (the other way
   round if the checkout is patched already) must give back every file byte for byte; the other
   is patched and trained.
2. A synthetic dataset written by the plugin's writer: ``train.rec``/``train.idx``/``property``
   (8 identities x 4 images, 112x112) and ``lfw.bin`` (40 pairs of 20 other identities).
3. ``configs/craft_check.py`` in the copy: the ``elasticface-arc+craft`` preset with CRAFT checked
   every 2 steps at a high threshold (so that revivals happen within 8 steps), mbf, embedding
   128, batch 8, 2 epochs (8 steps on one process), verification every 4 steps.
4. ``tools/arcface_torch_cpu.py configs/craft_check.py`` (under ``torchrun`` with ``--nproc``),
   ``OMP_NUM_THREADS=1`` unless set, so that two runs give the same losses.

Then it checks: training exits 0; a finite loss is logged at every step from 2 on (upstream logs
from its second step); verification ran; every rank's checkpoint holds upstream's six keys plus
``craft_plugin`` with the margin loss's and CRAFT's state; CRAFT checked at steps 2, 4, ... and
revived filters; with several ranks, every backbone tensor other than BatchNorm running statistics
and CRAFT's history are equal on all ranks. It prints a table and one JSON line; exit 0 if every
check passed, 1 if one failed, 2 on a bad argument.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIM = HERE / "arcface_torch_cpu.py"
UPSTREAM_KEYS = {"epoch", "global_step", "state_dict_backbone", "state_dict_softmax_fc", "state_optimizer",
                 "state_lr_scheduler"}
IMPORTS = ("torch", "sklearn", "scipy", "easydict", "torch.utils.tensorboard", "craft_plugin")
IDENTITIES, PER_IDENTITY, PAIRS, SEED = 8, 4, 40, 7
CONFIG = """from easydict import EasyDict as edict

# written by craft-plugin's tools/upstream_check.py
config = edict()
config.network = "mbf"
config.resume = False
config.output = {output!r}
config.embedding_size = 128
config.sample_rate = 1.0
config.fp16 = False
config.batch_size = 8
config.optimizer = "sgd"
config.lr = 0.1
config.momentum = 0.9
config.weight_decay = 5e-4
config.verbose = 4
config.frequent = 1
config.dali = False
config.num_workers = 0
config.rec = {rec!r}
config.num_classes = {classes}
config.num_image = {images}
config.num_epoch = 2
config.warmup_epoch = 0
config.val_targets = ["lfw"]
config.save_all_states = True
config.preset = "elasticface-arc+craft"
config.reactivation = {{"every": 2, "start": 2, "threshold": 0.9, "max_revive": 4}}
"""
LOSS = re.compile(r"Loss (\S+)\s+LearningRate \S+\s+Epoch: \d+\s+Global Step: (\d+)")
ACCURACY = re.compile(r"\[lfw\]\[(\d+)\]Accuracy-Flip: ([\d.]+)\+-([\d.]+)")


class Refused(Exception):
    """A bad argument: one line, exit 2."""


def say(message: str) -> None:
    print(f"upstream_check: {message}", file=sys.stderr, flush=True)


def files_of(root: Path) -> dict:
    """``{relative path: (bytes, mode)}`` of every file under ``root``."""
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mode)
            for p in sorted(root.rglob("*")) if p.is_file()}


def round_trip(checkout: Path, copy: Path) -> tuple:
    """Patch then revert a copy (revert then patch, if the checkout is patched already); every file
    must come back byte for byte."""
    from craft_plugin.patching import apply, check, revert

    shutil.copytree(checkout, copy, symlinks=True)
    steps = [("apply", apply, "applied"), ("revert", revert, "reverted")]
    if all(state.state == "applied" for state in check(str(copy))):
        steps.reverse()
    outcome = {word: dict(step(str(copy))) for word, step, _ in steps}
    ok = all(set(outcome[word].values()) == {done} for word, _, done in steps)
    before, after = files_of(checkout), files_of(copy)
    differ = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    return ok and not differ, f"{', '.join(f'{w}: {o}' for w, o in outcome.items())}, files differing: {differ[:5]}"


def write_data(root: Path) -> None:
    from craft_plugin._replica.synthetic import synthetic_image
    from craft_plugin.data.writer import write_bin, write_rec

    write_rec(root, [(synthetic_image(SEED, k, j, 112), k) for k in range(IDENTITIES) for j in range(PER_IDENTITY)])
    others = range(100, 100 + PAIRS // 2)
    write_bin(root / "lfw.bin", [(synthetic_image(SEED, a, 0, 112),
                                  synthetic_image(SEED, a if i % 2 == 0 else others[(i + 1) % len(others)], 1, 112),
                                  i % 2 == 0) for i, a in enumerate(list(others) * 2)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(copy: Path, python: str, nproc: int, log: Path) -> int:
    command = [python, str(SHIM), "configs/craft_check.py"]
    if nproc > 1:
        command = [python, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}",
                   str(SHIM), "configs/craft_check.py"]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    say(f"training: cd {copy} && OMP_NUM_THREADS={env['OMP_NUM_THREADS']} {' '.join(command)} (log: {log})")
    with open(log, "w") as out:
        return subprocess.run(command, cwd=copy, env=env, stdout=out, stderr=subprocess.STDOUT).returncode


def check_run(output: Path, nproc: int, code: int, log: Path) -> list:
    from craft_plugin.checkpoints import load_weights

    checks = [("training exits 0", code == 0, f"exit {code}; last lines of {log}: "
               + " | ".join(log.read_text(errors="replace").splitlines()[-3:]) if code else "exit 0")]
    text = (output / "training.log").read_text(errors="replace") if (output / "training.log").is_file() else ""
    steps = IDENTITIES * PER_IDENTITY // (8 * nproc) * 2
    losses = {int(step): float(loss) for loss, step in LOSS.findall(text)}
    checks.append((f"a finite loss at steps 2..{steps}", sorted(losses) == list(range(2, steps + 1))
                   and all(math.isfinite(v) for v in losses.values()),
                   " ".join(f"{losses[s]:.4f}" for s in sorted(losses))))
    accuracy = ACCURACY.findall(text)
    checks.append(("verification ran on lfw.bin", bool(accuracy),
                   ", ".join(f"step {s}: {a}+-{d}" for s, a, d in accuracy)))
    states = []
    for rank in range(nproc):
        path = output / f"checkpoint_gpu_{rank}.pt"
        state = load_weights(path) if path.is_file() else {}
        states.append(state)
        plugin = state.get("craft_plugin", {})
        checks.append((f"checkpoint_gpu_{rank}.pt: upstream's keys + craft_plugin",
                       UPSTREAM_KEYS <= set(state) and {"margin_loss", "reactivation"} <= set(plugin),
                       f"keys {sorted(state)}; craft_plugin {sorted(plugin)}"))
    history = states[0].get("craft_plugin", {}).get("reactivation", {}).get("history", [])
    checked = [r["step"] for r in history]
    revived = sum(len(r["revived"]) for r in history)
    checks.append(("CRAFT checked every 2 steps and revived filters",
                   set(range(2, steps + 1, 2)) <= set(checked) and revived > 0,
                   f"checks at steps {checked}, {revived} filters revived"))
    if nproc > 1 and all(states):
        backbones = [s["state_dict_backbone"] for s in states]
        differ = sorted(k for k in backbones[0] if "running_" not in k and "num_batches" not in k
                        and any(not b[k].equal(backbones[0][k]) for b in backbones[1:]))
        checks.append(("backbone equal on every rank (BatchNorm running statistics aside)", not differ,
                       f"differing: {differ[:5]}"))
        same = all(s["craft_plugin"]["reactivation"]["history"] == history for s in states[1:])
        checks.append(("the same CRAFT history on every rank", same, f"{len(history)} checks on rank 0"))
    return checks, losses


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Patch a copy of an arcface_torch checkout, train it a few "
                                     "steps on CPU with CRAFT and a margin loss, check the result.")
    parser.add_argument("checkout", help="your insightface/recognition/arcface_torch folder (left unchanged)")
    parser.add_argument("--work", help="a new or empty folder for the copies, data and run (default: a new "
                        "temporary folder, kept)")
    parser.add_argument("--nproc", type=int, default=1, help="processes (ranks) to train with (default 1)")
    parser.add_argument("--python", default=sys.executable,
                        help="the python that trains (default: this one); it needs craft-plugin installed")
    args = parser.parse_args(argv)
    try:
        from craft_plugin.patching import PatchError, apply, check_checkout

        checkout = Path(args.checkout).resolve()
        if not checkout.is_dir():
            raise Refused(f"CHECKOUT {args.checkout}: no such folder")
        try:
            check_checkout(checkout)
        except PatchError as exc:
            raise Refused(str(exc)) from exc
        if args.nproc < 1:
            raise Refused(f"--nproc {args.nproc} is not allowed: expected an integer >= 1")
        work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="upstream_check-"))
        if work.exists() and any(work.iterdir()):
            raise Refused(f"--work {work}: not empty; give a new or empty folder")
        probe = subprocess.run([args.python, "-c", f"import {', '.join(IMPORTS)}"], capture_output=True, text=True)
        if probe.returncode:
            raise Refused(f"--python {args.python}: cannot import what train_v2.py needs: "
                          f"{(probe.stderr.strip().splitlines() or ['?'])[-1]}")
    except Refused as exc:
        print(f"upstream_check: {exc}", file=sys.stderr)
        return 2
    work.mkdir(parents=True, exist_ok=True)
    say(f"work folder {work}")
    say("patch and revert a first copy")
    ok, detail = round_trip(checkout, work / "roundtrip")
    checks = [("patch and --revert give back every file byte for byte", ok, detail)]
    say("patch a second copy")
    copy = work / "arcface_torch"
    shutil.copytree(checkout, copy, symlinks=True)
    applied = apply(str(copy))
    checks.append(("both patches applied", all(w in ("applied", "already applied") for _, w in applied),
                   str(dict(applied))))
    say("write the synthetic dataset and lfw.bin")
    write_data(work / "data")
    (copy / "configs" / "craft_check.py").write_text(CONFIG.format(
        output=str(work / "out"), rec=str(work / "data"), classes=IDENTITIES, images=IDENTITIES * PER_IDENTITY))
    code = train(copy, args.python, args.nproc, work / "train.log")
    run_checks, losses = check_run(work / "out", args.nproc, code, work / "train.log")
    checks += run_checks
    for name, passed, detail in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {detail}")
    failed = [name for name, passed, _ in checks if not passed]
    print(json.dumps({"checkout": str(checkout), "work": str(work), "nproc": args.nproc, "passed": not failed,
                      "failed": failed, "loss": {str(k): v for k, v in sorted(losses.items())}}, sort_keys=True))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
