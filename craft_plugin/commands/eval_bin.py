"""craft-plugin eval bin MODEL --data DIR: a model on the LFW-style .bin verification sets, with the
numbers arcface_torch's eval/verification.py test() gives: flip-sum 10-fold accuracy, its std over
the folds and XNorm, plus VAL at FAR 1e-3 as its evaluate() computes it. No mxnet is needed.

MODEL is a model.pt, a folder holding one or a checkpoint_gpu_N.pt (with --arcface-torch and
--network or --config, or --module, as craft-plugin export), or an .onnx fed as insightface's
model_zoo feeds a recognition model. DIR holds NAME.bin for each NAME of --targets."""
from __future__ import annotations

import argparse

from craft_plugin.cli import UsageError, human, print_json
from craft_plugin.evaluation.models import add_model_arguments

TARGETS = ("lfw", "cfp_fp", "agedb_30", "calfw", "cplfw")   # the sets the papers report, in their order
DEFAULT_TARGETS = ",".join(TARGETS)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bin", help="accuracy, std, XNorm and VAL@FAR=1e-3 on .bin verification sets",
                       description=__doc__)
    p.add_argument("model", help="model.pt, a folder holding model.pt, checkpoint_gpu_N.pt, or an .onnx")
    p.add_argument("--data", required=True, metavar="DIR", help="the folder holding the NAME.bin files")
    p.add_argument("--targets", default=DEFAULT_TARGETS, metavar="NAMES",
                   help="comma-separated set names, NAME.bin each")
    add_model_arguments(p)
    p.add_argument("--json", action="store_true", help="print only the results document on stdout")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from craft_plugin.evaluation import bin_eval
    from craft_plugin.evaluation.models import load_embedder

    targets = [t.strip() for t in args.targets.split(",")]
    if not all(targets) or len(set(targets)) != len(targets):
        raise UsageError(f"--targets {args.targets!r}: expected distinct comma-separated names, e.g. {DEFAULT_TARGETS}")
    bin_eval.set_paths(args.data, targets)  # a missing file is named before the model is loaded
    document = bin_eval.evaluate(args.data, targets, load_embedder(args.model, args))
    out = human(args)
    print(f"{args.model} ({document['model']['format']}, {document['model']['embedding_size']}-d, "
          f"{document['model']['device']}) on {args.data}:", file=out)
    for line in bin_eval.table(document):
        print(line, file=out)
    if args.json:
        print_json(document)
    return 0
