"""craft-plugin eval compare A.json B.json: two evaluations of the same data (a baseline A and a
model B, e.g. trained with CRAFT) side by side. For each .bin set the accuracy difference B - A with
a 95% interval paired over the 10 folds (Student's t); for IJB-B / IJB-C the difference of TAR at
FAR 1e-4 (upstream's nearest-FPR rule) with a 95% interval from a seeded bootstrap that resamples
templates. One sentence per set says whether the interval excludes zero, then a markdown table in
the layout of the CRAFT paper (LFW, CFP-FP, AgeDB-30, CALFW, CPLFW, IJB-B, IJB-C).

A side may be several documents, comma-separated: A_bin.json,A_ijbb.json,A_ijbc.json (the --json
output of eval bin and eval ijb). Two evaluations of different data (other sets, other pair counts,
another .bin file, other IJB pairs) are refused."""
from __future__ import annotations

import argparse

from craft_plugin.cli import UsageError, human, print_json

DEFAULT_SEED = 0
DEFAULT_RESAMPLES = 1000


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="two evaluations of the same data with 95%% intervals of the differences",
                       description=__doc__)
    p.add_argument("a", metavar="A.json", help="the baseline's results document(s), comma-separated")
    p.add_argument("b", metavar="B.json", help="the other model's results document(s), comma-separated")
    p.add_argument("--labels", default="A,B", metavar="NAME_A,NAME_B", help="the two rows' names in the table")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the IJB template bootstrap")
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="resamples of the IJB template bootstrap")
    p.add_argument("--json", action="store_true", help="print only the comparison document on stdout")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from craft_plugin.evaluation import compare

    labels = tuple(s.strip() for s in args.labels.split(","))
    if len(labels) != 2 or not all(labels) or labels[0] == labels[1]:
        raise UsageError(f"--labels {args.labels!r}: expected two different names, e.g. baseline,CRAFT")
    document = compare.compare(args.a, args.b, labels, args.seed, args.resamples)
    out = human(args)
    for s in document["sets"].values():
        print(s["sentence"], file=out)
    print("", file=out)
    print(document["markdown"], file=out)
    if args.json:
        print_json(document)
    return 0
