"""IJB-B / IJB-C 1:N identification: open-set TPIR at FPIR and closed-set rank-k (CMC).

The protocol (Maze et al., IJB-C, ICB 2018; Whitelam et al., IJB-B, CVPRW 2017; Grother et al.,
NIST FRVT identification, for FPIR/FNIR) has two disjoint galleries, G1 and G2 (S1 and S2 in
IJB-B), each one template per subject, and one set of "mixed" probe templates (stills and video
frames) of all subjects. Each probe is searched against each gallery in turn; against gallery G
a probe whose subject has a template in G is *mated*, every other probe is *non-mated*. With the
cosine scores ``s(p, g)`` of probe and gallery template features (the same media-then-template
features as 1:1, see :mod:`craft_plugin.evaluation.ijb_scoring`), for one gallery:

- rank of a mated probe:  1 + #{gallery templates g' with s(p, g') > s(p, mate)} (ties count in the
  probe's favour);  rank-k = #{mated probes with rank <= k} / #mated (closed-set CMC; non-mated
  probes play no part).
- a non-mated probe raises a false alarm at threshold t when its best score max_g s(p, g) > t;
  FPIR(t) = #{non-mated probes with an alarm} / #non-mated.
- a mated probe is identified at threshold t when its mate is at rank 1 and s(p, mate) > t;
  TPIR(t) = #{identified mated probes} / #mated  (= 1 - FNIR(t) at rank 1).
- TPIR at FPIR f: TPIR at the lowest threshold with FPIR(t) <= f, i.e. t = the (floor(f n) + 1)-th
  largest best score of the n non-mated probes (t = -inf when floor(f n) >= n): the largest TPIR
  whose false alarms stay within f (the strict rule of the 1:1 report). None when no probe is
  non-mated.

The report gives these per gallery and, as the protocol reports one figure, their combination:
TPIR at FPIR the mean of the two galleries' values; rank-k over the mated searches of both
galleries together (each probe of a gallery subject is mated in exactly one gallery, so this is
the fraction of all such probes whose mate is within rank k).

Files (the release's ``meta/`` folder, read by ``read_1n_lists``): ``<t>_1N_gallery_G1.csv``,
``<t>_1N_gallery_G2.csv`` (``ijbb_1N_gallery_S1.csv``/``_S2.csv`` for IJB-B) and
``<t>_1N_probe_mixed.csv``: a header line starting ``TEMPLATE_ID,SUBJECT_ID`` (further columns,
e.g. ``FILENAME``, are ignored), then one comma-separated row per image of a template.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from craft_plugin.cli import UsageError
from craft_plugin.evaluation.roc import far_key

GALLERY_NAMES = {"IJBB": ("S1", "S2"), "IJBC": ("G1", "G2")}
FPIR_TARGETS: Tuple[float, ...] = (1e-2, 1e-1)
RANKS: Tuple[int, ...] = (1, 5, 10)
# probes scored against a gallery at once (4096 x 1772 float64 = 55 MiB on IJB-C)
PROBE_CHUNK = 4096


@dataclass(frozen=True)
class TemplateList:
    """One 1:N file: its unique templates (in first-appearance order) and their subjects."""
    path: Path
    templates: np.ndarray  # (K,) int64
    subjects: np.ndarray   # (K,) int64


@dataclass(frozen=True)
class OneToNLists:
    galleries: Dict[str, TemplateList]  # "G1"/"G2" (IJB-C) or "S1"/"S2" (IJB-B)
    probes: TemplateList


def list_files(root, target: str) -> List[Path]:
    """The release's 1:N files for ``target``: gallery 1, gallery 2, mixed probes."""
    if target not in GALLERY_NAMES:
        raise UsageError(f"target {target!r}: allowed are {', '.join(GALLERY_NAMES)}")
    t = target.lower()
    meta = Path(root) / "meta"
    return [meta / f"{t}_1N_gallery_{g}.csv" for g in GALLERY_NAMES[target]] + [meta / f"{t}_1N_probe_mixed.csv"]


def read_1n_lists(root, target: str) -> Optional[OneToNLists]:
    """The 1:N lists under ``root/meta``, or None when none of the three files is there (a release
    without 1:N protocol); one missing while others are present, or a bad line, is an error."""
    files = list_files(root, target)
    present = [f.is_file() for f in files]
    if not any(present):
        return None
    if not all(present):
        missing = [str(f) for f, ok in zip(files, present) if not ok]
        raise UsageError(f"{', '.join(missing)}: missing; 1:N identification needs all of "
                         f"{', '.join(f.name for f in files)} (or none of them, for 1:1 only)")
    lists = [_read_list(f) for f in files]
    galleries = dict(zip(GALLERY_NAMES[target], lists[:2]))
    for name, gallery in galleries.items():
        subjects, counts = np.unique(gallery.subjects, return_counts=True)
        if np.any(counts > 1):
            s = int(subjects[np.argmax(counts > 1)])
            raise UsageError(f"{gallery.path}: subject {s} has {int(counts.max())} gallery templates; "
                             "the protocol enrols one template per subject")
    g1, g2 = lists[:2]
    shared = np.intersect1d(g1.subjects, g2.subjects)
    if shared.size:
        raise UsageError(f"{g2.path}: subject {int(shared[0])} is also in {g1.path.name}; the two "
                         "galleries must hold disjoint subjects")
    return OneToNLists(galleries=galleries, probes=lists[2])


def _read_list(path: Path) -> TemplateList:
    subject_of: Dict[int, Tuple[int, int]] = {}  # template -> (subject, line of first mention)
    with open(path, "r", encoding="utf-8") as fh:
        header = fh.readline()
        fields = [f.strip().upper() for f in header.split(",")]
        if fields[:2] != ["TEMPLATE_ID", "SUBJECT_ID"]:
            raise UsageError(f"{path}:1: expected a header starting TEMPLATE_ID,SUBJECT_ID, got {header.strip()!r}")
        for number, line in enumerate(fh, start=2):
            if not line.strip():
                continue
            parts = line.split(",")
            try:
                template, subject = int(parts[0]), int(parts[1])
            except (ValueError, IndexError):
                raise UsageError(f"{path}:{number}: expected TEMPLATE_ID,SUBJECT_ID as integers, "
                                 f"got {line.strip()!r}") from None
            known = subject_of.setdefault(template, (subject, number))
            if known[0] != subject:
                raise UsageError(f"{path}:{number}: template {template} has subject {subject}, but "
                                 f"subject {known[0]} at line {known[1]}")
    if not subject_of:
        raise UsageError(f"{path}: no templates listed")
    templates = np.fromiter(subject_of, dtype=np.int64, count=len(subject_of))
    subjects = np.fromiter((v[0] for v in subject_of.values()), dtype=np.int64, count=len(subject_of))
    return TemplateList(path=path, templates=templates, subjects=subjects)


def _rows(template_ids: np.ndarray, listed: TemplateList) -> np.ndarray:
    pos = np.minimum(np.searchsorted(template_ids, listed.templates), template_ids.size - 1)
    bad = np.flatnonzero(template_ids[pos] != listed.templates)
    if bad.size:
        raise UsageError(f"{listed.path}: template {int(listed.templates[bad[0]])} has no image in the "
                         "template/media list")
    return pos


def search_gallery(probe_feats: np.ndarray, probe_subjects: np.ndarray, gallery_feats: np.ndarray,
                   gallery_subjects: np.ndarray) -> dict:
    """One gallery's figures (see the module docstring) from L2-normalised template features."""
    mate = {int(s): i for i, s in enumerate(gallery_subjects)}
    mate_col = np.array([mate.get(int(s), -1) for s in probe_subjects], dtype=np.int64)
    mated = mate_col >= 0
    best = np.empty(probe_subjects.size, np.float64)
    mate_score = np.full(probe_subjects.size, -np.inf)
    rank = np.zeros(probe_subjects.size, np.int64)
    for a in range(0, probe_subjects.size, PROBE_CHUNK):
        b = min(a + PROBE_CHUNK, probe_subjects.size)
        scores = probe_feats[a:b] @ gallery_feats.T
        best[a:b] = scores.max(axis=1)
        m = np.flatnonzero(mated[a:b])
        mate_score[a + m] = scores[m, mate_col[a + m]]
        rank[a + m] = 1 + np.count_nonzero(scores[m] > mate_score[a + m][:, np.newaxis], axis=1)
    n_mated = int(mated.sum())
    non_mated_best = np.sort(best[~mated])[::-1]
    tpir, thresholds = {}, {}
    for fpir in FPIR_TARGETS:
        key = far_key(fpir)
        if non_mated_best.size == 0 or n_mated == 0:
            tpir[key], thresholds[key] = None, None
            continue
        alarms = math.floor(fpir * non_mated_best.size + 1e-9)  # false alarms allowed
        t = non_mated_best[alarms] if alarms < non_mated_best.size else -np.inf
        identified = mated & (rank == 1) & (mate_score > t)
        tpir[key] = float(identified.sum() / n_mated)
        thresholds[key] = float(t) if np.isfinite(t) else None
    hits = {f"rank_{k}": int(np.count_nonzero(mated & (rank <= k))) for k in RANKS}
    return {
        "probes": int(probe_subjects.size),
        "mated": n_mated,
        "non_mated": int(non_mated_best.size),
        "tpir_at_fpir": tpir,
        "thresholds": thresholds,
        **{k: (v / n_mated if n_mated else None) for k, v in hits.items()},
        "hits": hits,
    }


def identification_report(template_ids: np.ndarray, feats: np.ndarray, lists: OneToNLists) -> dict:
    """1:N figures per gallery and combined (see the module docstring), from the sorted template ids
    and L2-normalised features of ``ijb_scoring.template_features``."""
    template_ids = np.asarray(template_ids)
    feats = np.asarray(feats, dtype=np.float64)
    probe_feats = feats[_rows(template_ids, lists.probes)]
    per_gallery = {}
    for name, gallery in lists.galleries.items():
        per_gallery[name] = search_gallery(probe_feats, lists.probes.subjects,
                                           feats[_rows(template_ids, gallery)], gallery.subjects)
    results = list(per_gallery.values())
    mated = sum(r["mated"] for r in results)
    combined_tpir = {}
    for fpir in FPIR_TARGETS:
        key = far_key(fpir)
        values = [r["tpir_at_fpir"][key] for r in results]
        combined_tpir[key] = None if any(v is None for v in values) else float(np.mean(values))
    combined = {"tpir_at_fpir": combined_tpir, "mated": mated}
    for k in RANKS:
        hits = sum(r["hits"][f"rank_{k}"] for r in results)
        combined[f"rank_{k}"] = hits / mated if mated else None
    return {
        "galleries": per_gallery,
        "probe_templates": int(lists.probes.templates.size),
        **combined,
        "definition": "TPIR at FPIR (open set, rank 1, score > threshold; mean of the two galleries) and "
                      "rank-k (closed set over mated probes of both galleries)",
    }
