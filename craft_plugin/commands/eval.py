"""craft-plugin eval: measure a trained backbone on the benchmarks the papers report.

  eval ijb      IJB-B / IJB-C 1:1 verification (TAR at FAR) and, when the release's 1:N lists are
                present, 1:N identification
  eval bin      the LFW-style .bin verification sets (lfw, cfp_fp, agedb_30, calfw, cplfw)
  eval compare  two evaluations of the same data side by side, with 95% intervals"""
from __future__ import annotations

import argparse
import importlib

# sub-verb -> module with add_parser(subparsers) and run(args) -> int
SUBCOMMANDS = {
    "ijb": "craft_plugin.commands.eval_ijb",
    "bin": "craft_plugin.commands.eval_bin",
    "compare": "craft_plugin.commands.eval_compare",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a model on IJB-B/IJB-C or .bin sets, compare two evaluations",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="eval_command", metavar="TARGET")
    verbs.required = True
    for module_name in SUBCOMMANDS.values():
        importlib.import_module(module_name).add_parser(verbs)
