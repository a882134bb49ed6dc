"""Two evaluations of the same data side by side (A, the baseline, and B, say CRAFT), with a 95%
interval for each difference B - A and the table of the CRAFT paper.

- ``.bin`` sets: the 10 folds are the same pairs for both models, so the difference is paired by
  fold: d_k = acc_B,k - acc_A,k, and the interval is mean(d) +- t_{0.975, 9} s_d / sqrt(10)
  (Student's t; :func:`craft_plugin.commands.demo_report.paired_difference`).
- IJB-B / IJB-C, TAR at FAR 1e-4 by upstream's nearest-FPR rule (the number published tables
  report): a paired bootstrap over templates. Each of R resamples draws the T templates that the
  pairs name T times with replacement (``numpy.random.default_rng(seed)``, the same draw for A and
  B); a pair (t1, t2) then counts m(t1) m(t2) times, m the number of draws of each template (as if
  the drawn templates were a new release); both ROCs are computed on the resampled pairs
  (:func:`craft_plugin.evaluation.roc.roc_curve`, sklearn's, on the pairs repeated by their counts)
  and the difference is taken. The interval is the 2.5th to 97.5th percentile of the R differences
  (numpy's linear percentile). Resampling templates, not pairs, keeps the dependence between the
  pairs that share a template (each template is in many pairs).

An interval that excludes zero says the difference is beyond what resampling the folds / templates
explains; one that includes it says the data cannot tell the two models apart."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from craft_plugin.cli import UsageError
from craft_plugin.commands.demo_report import paired_difference
from craft_plugin.evaluation import roc
from craft_plugin.commands.eval_bin import TARGETS

IJB_FAR = 1e-4
CONFIDENCE = 0.95
# the CRAFT paper's table: column -> (kind, name in the documents)
PAPER_COLUMNS = (("LFW", "lfw"), ("CFP-FP", "cfp_fp"), ("AgeDB-30", "agedb_30"), ("CALFW", "calfw"),
                 ("CPLFW", "cplfw"), ("IJB-B (TAR@FAR=1e-4)", "IJBB"), ("IJB-C (TAR@FAR=1e-4)", "IJBC"))


class Side:
    """The documents of one side: ``bin`` sets by name and ``ijb`` documents by target."""

    def __init__(self, label: str, spec: str):
        self.label, self.files = label, [f for f in spec.split(",") if f]
        self.bin: Dict[str, Dict[str, Any]] = {}
        self.ijb: Dict[str, Dict[str, Any]] = {}
        self.models: List[Any] = []
        if not self.files:
            raise UsageError(f"{label}: no file given; expected RESULTS.json[,MORE.json]")
        for name in self.files:
            doc = read_document(name)
            self.models.append(doc.get("model"))
            if doc["kind"] == "bin":
                for target, numbers in doc["targets"].items():
                    if target in self.bin:
                        raise UsageError(f"{name}: set {target} is also in another document of side {label}")
                    self.bin[target] = {**numbers, "document": name}
            else:
                if doc["target"] in self.ijb:
                    raise UsageError(f"{name}: {doc['target']} is also in another document of side {label}")
                self.ijb[doc["target"]] = {**doc, "document": name}


def read_document(name: str) -> Dict[str, Any]:
    """One ``eval bin`` or ``eval ijb`` results document, checked for what compare needs."""
    path = Path(name)
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"{name}: cannot read it ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise UsageError(f"{name}: not a JSON document ({exc})") from exc
    kind = doc.get("kind") if isinstance(doc, dict) else None
    need = {"bin": ("targets",), "ijb": ("target", "pairs", "templates", "images", "tar_at_far", "files")}.get(kind)
    if need is None:
        raise UsageError(f"{name}: not an eval bin/ijb results document (its \"kind\" is {kind!r}, "
                         f"expected \"bin\" or \"ijb\")")
    missing = [k for k in need if k not in doc]
    if kind == "bin" and not missing:
        missing = [f"targets.{t}.{k}" for t, v in doc["targets"].items()
                   for k in ("accuracy", "pairs", "fold_accuracy") if k not in v]
    if kind == "ijb" and not missing:
        missing = [f"files.{k}" for k in ("scores", "pairs") if k not in doc["files"]]
    if missing:
        raise UsageError(f"{name}: an eval {kind} document without {', '.join(missing)}")
    return doc


def same_data(a: Side, b: Side) -> None:
    """Refuse two evaluations of different data, with one line saying what differs."""
    if sorted(a.bin) != sorted(b.bin) or sorted(a.ijb) != sorted(b.ijb):
        raise UsageError(f"A and B evaluate different sets: A has {sorted(a.bin) + sorted(a.ijb)}, "
                         f"B has {sorted(b.bin) + sorted(b.ijb)}; compare evaluations of the same data")
    for name in a.bin:
        x, y = a.bin[name], b.bin[name]
        for key in ("pairs", "folds", "sha256"):
            if key in x and key in y and x[key] != y[key]:
                raise UsageError(f"{name}: A ({x['document']}) and B ({y['document']}) are evaluations of "
                                 f"different data: {key} {x[key]} vs {y[key]}")
        if len(x["fold_accuracy"]) != len(y["fold_accuracy"]):
            raise UsageError(f"{name}: A has {len(x['fold_accuracy'])} folds, B {len(y['fold_accuracy'])}")
    for target in a.ijb:
        x, y = a.ijb[target], b.ijb[target]
        for key in ("pairs", "templates", "images"):
            if x[key] != y[key]:
                raise UsageError(f"{target}: A ({x['document']}) and B ({y['document']}) are evaluations of "
                                 f"different data: {x[key]} vs {y[key]} {key}")


def load_pairs(doc: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(scores, p1, p2, labels)`` of an ijb document, from the files it names, checked against it."""
    files = doc["files"]
    try:
        scores = np.load(files["scores"], allow_pickle=False)
        with np.load(files["pairs"], allow_pickle=False) as pairs:
            p1, p2, labels = (np.asarray(pairs[k]) for k in ("p1", "p2", "labels"))
    except (OSError, KeyError, ValueError) as exc:
        raise UsageError(f"{doc['document']}: its scores/pairs files cannot be read "
                         f"({files['scores']}, {files['pairs']}): {exc}") from exc
    if not (scores.shape == p1.shape == p2.shape == labels.shape == (doc["pairs"],)):
        raise UsageError(f"{doc['document']}: the document has {doc['pairs']} pairs but its files hold "
                         f"{scores.shape} scores and {p1.shape} pairs")
    tar = tar_at(scores, labels, np.ones(scores.size, dtype=np.int64))
    if abs(tar - float(doc["tar_at_far"][roc.far_key(IJB_FAR)])) > 1e-9:
        raise UsageError(f"{doc['document']}: its scores file {files['scores']} gives TAR {tar:.6f} at FAR "
                         f"{roc.far_key(IJB_FAR)}, the document says {doc['tar_at_far'][roc.far_key(IJB_FAR)]:.6f}: "
                         f"the file is not this evaluation's")
    return scores, p1, p2, labels


def tar_at(scores: np.ndarray, labels: np.ndarray, counts: np.ndarray, far: float = IJB_FAR) -> float:
    """TAR at ``far`` (nearest rule) of the pairs repeated ``counts`` times each: ``roc.roc_curve``
    on the repeated pairs (the reference :class:`RankedPairs` is held to)."""
    keep = np.repeat(np.arange(scores.size), counts)
    fpr, tpr, _ = roc.roc_curve(labels[keep], scores[keep])
    return float(tpr[roc.operating_point(fpr, tpr, far, "nearest")])


class RankedPairs:
    """One model's pair scores ranked once as ``roc.roc_curve`` ranks them, for many resamples.

    :meth:`tar` gives :func:`tar_at` without repeating and re-sorting the pairs: in the ranked
    order the ROC points are the ends of the runs of equal scores (a run whose pairs all count 0
    is no point, as a pair counted 0 times is absent), with cumulative counts of genuine and
    impostor pairs; ``drop_intermediate`` drops a point on a straight segment between its
    neighbours. The nearest-FPR rule never picks a point with FPR > 2 ``far``: the curve's start
    (FPR 0) is nearer. So only a prefix of the ranking is needed, up to two kept points beyond
    FPR 2 ``far`` (the last one's fate depends on its unseen neighbour and is not used); the
    prefix doubles until it holds them, and the whole list falls back to :func:`tar_at`."""

    def __init__(self, scores: np.ndarray, labels: np.ndarray, far: float = IJB_FAR, min_prefix: int = 4096):
        self.scores, self.labels, self.far = scores, labels, far
        self.order = np.argsort(scores, kind="mergesort")[::-1]     # roc_curve's order
        self.genuine = (labels[self.order] == 1).astype(np.int64)
        ranked = scores[self.order]
        self.run_ends = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]
        impostors = np.cumsum(1 - self.genuine)
        self.prefix = max(min_prefix, 2 * int(np.searchsorted(impostors, 4 * far * impostors[-1])))

    def tar(self, counts: np.ndarray, genuine_total: int, impostor_total: int) -> float:
        """TAR at ``far`` when pair k counts ``counts[k]`` times (totals: the counted pairs of each label)."""
        n = self.order.size
        length = self.prefix
        while length < n:
            w = counts[self.order[:length]]
            tp = np.cumsum(w * self.genuine[:length])
            fp = np.cumsum(w) - tp
            ends = self.run_ends[:np.searchsorted(self.run_ends, length - 1, side="right")]
            ends = ends[np.diff(np.r_[0, tp[ends] + fp[ends]]) > 0]     # runs that count at all
            tps, fps = tp[ends], fp[ends]
            if ends.size >= 3 and np.count_nonzero(fps > 2 * self.far * impostor_total) >= 2:
                keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2))]   # all points but the last
                fpr = np.r_[0.0, fps[:-1][keep]] / float(impostor_total)
                tpr = np.r_[0.0, tps[:-1][keep]] / float(genuine_total)
                return float(tpr[roc.operating_point(fpr, tpr, self.far, "nearest")])
            length *= 2
        return tar_at(self.scores, self.labels, counts, self.far)


def template_index(p1: np.ndarray, p2: np.ndarray) -> Tuple[int, np.ndarray, np.ndarray]:
    """``(T, i1, i2)``: the number of templates the pairs name and each pair's two templates as 0..T-1."""
    templates, index = np.unique(np.concatenate([p1, p2]), return_inverse=True)
    return templates.size, index[:p1.size], index[p1.size:]


def template_counts(rng: np.random.Generator, templates: int, i1: np.ndarray, i2: np.ndarray) -> np.ndarray:
    """One bootstrap draw: how often each pair counts, m(t1) m(t2), with m(t) the number of times
    template t comes up among ``templates`` draws with replacement."""
    draws = np.bincount(rng.integers(0, templates, templates), minlength=templates)
    return draws[i1] * draws[i2]


def bootstrap_differences(a: Tuple[np.ndarray, ...], b_scores: np.ndarray, resamples: int, seed: int,
                          desc: str = "bootstrap") -> np.ndarray:
    """B - A TAR at FAR 1e-4 for each of ``resamples`` template draws; ``a`` = (scores, p1, p2, labels)."""
    from tqdm import tqdm

    scores_a, p1, p2, labels = a
    templates, i1, i2 = template_index(p1, p2)
    ranked_a, ranked_b = RankedPairs(scores_a, labels), RankedPairs(b_scores, labels)
    genuine = (labels == 1).astype(np.int64)
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    for r in tqdm(range(resamples), desc=desc, unit="resample", file=sys.stderr, disable=None, leave=False):
        counts = template_counts(rng, templates, i1, i2)
        genuine_total = int(np.dot(counts, genuine))
        impostor_total = int(counts.sum()) - genuine_total
        out[r] = ranked_b.tar(counts, genuine_total, impostor_total) - ranked_a.tar(counts, genuine_total, impostor_total)
    return out


def sentence(name: str, diff: float, low: Optional[float], high: Optional[float], how: str,
             labels: Tuple[str, str]) -> str:
    """One plain sentence on whether the interval excludes zero (values in percentage points)."""
    a, b = labels
    if low is None:
        return f"{name}: {b} - {a} = {100 * diff:+.2f} points; with one fold there is no interval."
    where = f"{name}: {b} - {a} = {100 * diff:+.2f} points (95% interval {100 * low:+.2f} to {100 * high:+.2f}, {how})"
    if low <= 0 <= high:
        return where + "; the interval includes zero: the difference is within noise."
    return where + f"; the interval excludes zero: {b} is {'better' if diff > 0 else 'worse'} than {a} beyond noise."


def compare(a_spec: str, b_spec: str, labels: Tuple[str, str], seed: int, resamples: int) -> Dict[str, Any]:
    """The ``eval compare`` document (the defaults of ``seed`` and ``resamples`` are the CLI's)."""
    if resamples < 1:
        raise UsageError(f"--resamples {resamples}: expected an integer >= 1")
    a, b = Side("A", a_spec), Side("B", b_spec)
    same_data(a, b)
    sets: Dict[str, Dict[str, Any]] = {}
    for name in sorted(a.bin, key=lambda n: (TARGETS.index(n) if n in TARGETS else len(TARGETS), n)):
        x, y = a.bin[name], b.bin[name]
        paired = paired_difference(y["fold_accuracy"], x["fold_accuracy"])
        how = f"paired t over the {paired['folds']} folds"
        sets[name] = {"kind": "bin", "metric": "accuracy", "a": x["accuracy"], "b": y["accuracy"],
                      "difference": paired["mean"], "low": paired["low"], "high": paired["high"],
                      "method": how, "folds": paired["folds"],
                      "excludes_zero": None if paired["low"] is None else not paired["within_noise"],
                      "sentence": sentence(name, paired["mean"], paired["low"], paired["high"], how, labels)}
    for target in sorted(a.ijb):
        x, y = a.ijb[target], b.ijb[target]
        pairs_a, pairs_b = load_pairs(x), load_pairs(y)
        if not all(np.array_equal(u, v) for u, v in zip(pairs_a[1:], pairs_b[1:])):
            raise UsageError(f"{target}: A ({x['document']}) and B ({y['document']}) are evaluations of "
                             f"different data: their pair lists (p1, p2, labels) differ")
        diffs = bootstrap_differences(pairs_a, pairs_b[0], resamples, seed, desc=f"{target} bootstrap")
        tail = 100 * (1 - CONFIDENCE) / 2
        low, high = (float(v) for v in np.percentile(diffs, [tail, 100 - tail]))
        key = roc.far_key(IJB_FAR)
        diff = float(y["tar_at_far"][key]) - float(x["tar_at_far"][key])
        how = f"bootstrap over templates, {resamples} resamples, seed {seed}"
        sets[target] = {"kind": "ijb", "metric": f"TAR at FAR {roc.far_key(IJB_FAR)} (nearest-FPR rule)",
                        "a": float(x["tar_at_far"][key]), "b": float(y["tar_at_far"][key]), "difference": diff,
                        "low": low, "high": high, "method": how, "resamples": resamples, "seed": seed,
                        "excludes_zero": not (low <= 0 <= high),
                        "sentence": sentence(f"{target} TAR@FAR={roc.far_key(IJB_FAR)}", diff, low, high, how, labels)}
    document = {"kind": "compare", "labels": list(labels), "difference": f"{labels[1]} - {labels[0]}",
                "a": {"files": a.files, "models": a.models}, "b": {"files": b.files, "models": b.models},
                "confidence": CONFIDENCE, "sets": sets,
                "bootstrap": {"seed": seed, "resamples": resamples, "unit": "templates"} if a.ijb else None}
    document["markdown"] = markdown_table(document)
    return document


def markdown_table(document: Dict[str, Any]) -> str:
    """The CRAFT paper's layout: LFW, CFP-FP, AgeDB-30, CALFW, CPLFW, IJB-B, IJB-C (TAR@FAR=1e-4), in %;
    a row for A, for B and for the difference with its 95% interval; sets not evaluated show a dash."""
    sets = document["sets"]
    columns = list(PAPER_COLUMNS) + [(n, n) for n in sets if n not in dict(PAPER_COLUMNS).values()]
    header = "| Method | " + " | ".join(c for c, _ in columns) + " |"
    rule = "|---|" + "---:|" * len(columns)

    def cell(name: str, field: str) -> str:
        if name not in sets:
            return "-"
        s = sets[name]
        if field != "difference":
            return f"{100 * s[field]:.2f}"
        if s["low"] is None:
            return f"{100 * s['difference']:+.2f}"
        return f"{100 * s['difference']:+.2f} [{100 * s['low']:+.2f}, {100 * s['high']:+.2f}]"

    a, b = document["labels"]
    rows = [f"| {label} | " + " | ".join(cell(n, field) for _, n in columns) + " |"
            for label, field in ((a, "a"), (b, "b"), (f"{b} - {a} (95% interval)", "difference"))]
    return "\n".join([header, rule, *rows])
