"""CRAFT cost: one check + revival on a 64x3x3x3 conv1, and the step-time overhead in the mini
pipeline at the default schedule (a check every 1000 real steps).

The overhead is reported two ways from one run: measured (mini-pipeline steps with CRAFT on vs
off, interleaved blocks, median step time; CPU noise is of the order of a percent), and
accounted (per-step hook cost + check cost / 1000, over the off step time), which is what the
schedule costs once the noise is taken out.

usage: python bench/bench_craft.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

import craft_plugin.plugin
from craft_plugin._replica.backbone import MiniIResNet
from craft_plugin._replica.config import get_config
from craft_plugin._replica.train import train
from craft_plugin.reactivation.controller import Reactivator
from craft_plugin.reactivation.layer import find_first_layer
from craft_plugin.reactivation.options import ReactivationOptions


def median(xs):
    return sorted(xs)[len(xs) // 2]


def check_cost(revive: bool, repeats: int) -> float:
    net = MiniIResNet(64)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(4, 3, 32, 32)).sum().backward()
    opt.step()
    reactivator = Reactivator(ReactivationOptions(), find_first_layer(net), opt)
    times = []
    for _ in range(repeats):
        if revive:
            with torch.no_grad():
                net.conv1.weight[:16] *= 1e-4
        start = time.perf_counter()
        record = reactivator.check("step")
        times.append(time.perf_counter() - start)
        assert (len(record["revived"]) == 16) == revive
    return median(times)


def hook_cost(repeats: int) -> float:
    net = MiniIResNet(64)
    reactivator = Reactivator(ReactivationOptions(every=10 ** 9), find_first_layer(net))
    start = time.perf_counter()
    for _ in range(repeats):
        reactivator.step()
    return (time.perf_counter() - start) / repeats


def step_time(reactivation, epochs: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        cfg = get_config(out, rec="synthetic:32x16", num_classes=32, num_image=512, batch_size=32,
                         num_epoch=epochs, reactivation=reactivation)
        start = time.perf_counter()
        result = train(cfg, plugins=[craft_plugin.plugin])
        return (time.perf_counter() - start) / result.global_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats, blocks, epochs = (50, 1, 1) if args.quick else (500, 4, 3)
    detect = check_cost(False, repeats)
    revive = check_cost(True, repeats)
    per_step_hook = hook_cost(repeats * 100)
    off, on = [], []
    for _ in range(blocks):
        off.append(step_time(None, epochs))
        on.append(step_time("craft", epochs))
    t_off, t_on = median(off), median(on)
    accounted = (per_step_hook + revive / ReactivationOptions().every) / t_off
    rows = [("check, nothing inactive", detect * 1e3, "ms"), ("check + revive 16 filters", revive * 1e3, "ms"),
            ("per-step hook (counter)", per_step_hook * 1e6, "us"), ("mini step, CRAFT off", t_off * 1e3, "ms"),
            ("mini step, CRAFT on (default)", t_on * 1e3, "ms"),
            ("overhead measured", 100 * (t_on / t_off - 1), "%"), ("overhead accounted", 100 * accounted, "%")]
    for name, value, unit in rows:
        print(f"{name:<32}{value:>12.4f} {unit}")
    print(json.dumps({"bench": "craft", "check_ms": round(detect * 1e3, 4), "check_revive_ms": round(revive * 1e3, 4),
                      "hook_us": round(per_step_hook * 1e6, 3), "step_off_ms": round(t_off * 1e3, 2),
                      "step_on_ms": round(t_on * 1e3, 2), "overhead_measured_ratio": round(t_on / t_off, 4),
                      "overhead_accounted_percent": round(100 * accounted, 5)}))


if __name__ == "__main__":
    main()
