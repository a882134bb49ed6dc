"""craft-plugin presets: the named presets, their values and sources; and the margin losses with
their parameters and defaults."""
from __future__ import annotations

import argparse

from craft_plugin.cli import print_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list presets (config.preset) and margin losses (config.margin_loss)",
                       description=__doc__)
    p.add_argument("--json", action="store_true", help="print only one JSON document on stdout")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from craft_plugin.losses import MARGIN_LOSSES, defaults_in_force, values_in_force
    from craft_plugin.presets import PRESETS

    def in_force(values: dict) -> dict:
        return {k: values_in_force(v) if k == "margin_loss" else v for k, v in values.items()}

    presets = {name: {"values": in_force(PRESETS.get(name).values), "source": PRESETS.get(name).source}
               for name in PRESETS.names()}
    losses = {name: defaults_in_force(name) for name in MARGIN_LOSSES.names()}
    if args.json:
        print_json({"presets": presets, "margin_losses": losses})
        return 0
    print("presets (config.preset = NAME):")
    for name, info in presets.items():
        print(f"  {name:<28} {info['values']}")
        print(f"  {'':<28} source: {info['source']}")
    print("\nmargin losses (config.margin_loss = NAME or {'name': NAME, ...}):")
    for name, params in losses.items():
        print(f"  {name:<28} {params}")
    return 0
