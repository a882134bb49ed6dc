"""The meta files of an IJB-B / IJB-C release, as arcface_torch's ``eval_ijbc.py`` reads them, checked.

A release folder ``DIR`` holds ``loose_crop/`` (the face crops) and ``meta/`` with, for ``t`` =
``ijbb`` or ``ijbc``:

- ``<t>_name_5pts_score.txt``: ``NAME x1 y1 x2 y2 x3 y3 x4 y4 x5 y5 SCORE`` per image: the five
  landmarks (eyes, nose tip, mouth corners) in crop pixels and the detector's faceness score;
  this file's order is the image order of the features;
- ``<t>_face_tid_mid.txt``: ``NAME TEMPLATE MEDIA`` per image;
- ``<t>_template_pair_label.txt``: ``TEMPLATE1 TEMPLATE2 LABEL`` per 1:1 pair (1 genuine, 0 impostor).

Upstream joins the two per-image lists by row order and gives a pair that names an unknown template
the score of template 0. Here the lists are joined by image name and must name the same images,
and every pair must name a template that has images; each malformed line is one error naming the
file and the line. Numbers are parsed as upstream parses them: ``float`` then float32 for landmarks
and scores, integers for ids.
"""
from __future__ import annotations

import hashlib
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np
from tqdm import tqdm

from craft_plugin.cli import UsageError

TARGETS = ("IJBB", "IJBC")
LANDMARKS_FIELDS = 12           # name, 5 x (x, y), faceness score
TEMPLATE_MEDIA_FIELDS = 3       # name, template id, media id
PAIR_FIELDS = 3                 # template 1, template 2, label


@dataclass
class IJBMeta:
    """One IJB release's protocol, in the image order of ``<t>_name_5pts_score.txt``."""
    root: Path
    target: str
    names: np.ndarray        # (N,) str, file names under loose_crop/
    templates: np.ndarray    # (N,) int64
    medias: np.ndarray       # (N,) int64
    landmarks: np.ndarray    # (N, 5, 2) float32, crop pixels
    faceness: np.ndarray     # (N,) float32
    p1: np.ndarray           # (P,) int64 template ids
    p2: np.ndarray           # (P,) int64
    labels: np.ndarray       # (P,) int8, 1 genuine / 0 impostor

    @property
    def image_dir(self) -> Path:
        return self.root / "loose_crop"

    def image_path(self, index: int) -> Path:
        return self.image_dir / str(self.names[index])


def meta_files(root: Path, target: str) -> Tuple[Path, Path, Path]:
    """The three 1:1 meta files: (landmarks and scores, template/media, pairs)."""
    t = target.lower()
    meta = Path(root) / "meta"
    return (meta / f"{t}_name_5pts_score.txt", meta / f"{t}_face_tid_mid.txt",
            meta / f"{t}_template_pair_label.txt")


def meta_sha256(root: Path, target: str) -> str:
    """SHA-256 over the three meta files in :func:`meta_files` order (names features' data)."""
    digest = hashlib.sha256()
    for path in meta_files(root, target):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def _lines(path: Path, progress: bool = False) -> Iterator[Tuple[int, List[str]]]:
    """``(line number, fields)`` of each non-blank line; with ``progress`` a line counter on stderr."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = tqdm(handle, desc=f"read {path.name}", unit=" lines", file=sys.stderr, leave=False,
                     mininterval=0.5) if progress else handle
        for number, line in enumerate(lines, 1):
            fields = line.split()
            if fields:
                yield number, fields


def _number(path: Path, line: int, field: str, what: str, kind=float):
    try:
        value = kind(field)
    except ValueError:
        raise UsageError(f"{path}:{line}: {what} {field!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not np.isfinite(value):
        raise UsageError(f"{path}:{line}: {what} {field!r} is not a finite number")
    return value


def _image_lines(path: Path, fields_expected: int, layout: str, first_line: Dict[str, int],
                 progress: bool) -> Iterator[Tuple[int, List[str]]]:
    """``_lines`` of a per-image list: each line has ``fields_expected`` fields (``layout``), and no
    image is named twice; ``first_line`` records the line of each image."""
    for line, fields in _lines(path, progress):
        if len(fields) != fields_expected:
            raise UsageError(f"{path}:{line}: expected {layout} ({fields_expected} fields), got {len(fields)}")
        name = fields[0]
        if name in first_line:
            raise UsageError(f"{path}:{line}: image {name} is listed twice (first on line {first_line[name]})")
        first_line[name] = line
        yield line, fields


def _check_landmark_line(path: Path, line: int, fields: List[str]) -> None:
    """Raise the error of a landmark line whose numbers do not parse or are not finite."""
    for value in fields[1:-1]:
        _number(path, line, value, "landmark coordinate")
    _number(path, line, fields[-1], "faceness score")


def _read_landmarks(path: Path, progress: bool):
    rows: List[List[str]] = []
    first_line: Dict[str, int] = {}
    for _, fields in _image_lines(path, LANDMARKS_FIELDS, "NAME x1 y1 x2 y2 x3 y3 x4 y4 x5 y5 SCORE",
                                  first_line, progress):
        rows.append(fields)
    if not rows:
        raise UsageError(f"{path}: no image lines")
    # numpy's C parser, correctly rounded to float64 as Python's float(); then float32, as upstream
    # (np.array([float(x) ...], dtype=np.float32) for landmarks, np.array(str).astype(np.float32) for scores)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            numbers = np.loadtxt(path, dtype=np.float64, comments=None, usecols=range(1, LANDMARKS_FIELDS), ndmin=2)
        finite = np.isfinite(numbers).all(axis=1)
    except ValueError:
        numbers, finite = None, None
    for row in (range(len(rows)) if finite is None else np.flatnonzero(~finite)):
        _check_landmark_line(path, first_line[rows[row][0]], rows[row])
    if numbers is None or numbers.shape != (len(rows), LANDMARKS_FIELDS - 1):
        raise UsageError(f"{path}: landmarks and scores are not all numbers")
    numbers = numbers.astype(np.float32)
    return [fields[0] for fields in rows], first_line, numbers[:, :10].reshape(-1, 5, 2).copy(), numbers[:, 10].copy()


def _read_template_media(path: Path, landmark_path: Path, first_line: Dict[str, int], progress: bool):
    index = {name: i for i, name in enumerate(first_line)}
    templates = np.full(len(index), -1, dtype=np.int64)
    medias = np.full(len(index), -1, dtype=np.int64)
    seen: Dict[str, int] = {}
    for line, fields in _image_lines(path, TEMPLATE_MEDIA_FIELDS, "NAME TEMPLATE MEDIA", seen, progress):
        name = fields[0]
        if name not in index:
            raise UsageError(f"{path}:{line}: image {name} is not in {landmark_path.name}")
        i = index[name]
        templates[i] = _number(path, line, fields[1], "template id", int)
        medias[i] = _number(path, line, fields[2], "media id", int)
    missing = [name for name in index if name not in seen]
    if missing:
        raise UsageError(f"{landmark_path}:{first_line[missing[0]]}: image {missing[0]} has no line in {path.name} "
                         f"({len(missing)} such images)")
    return templates, medias


def _pair_line_number(path: Path, row: int) -> int:
    """The line number of the ``row``-th non-blank line (only called to name a bad pair)."""
    for count, (line, _) in enumerate(_lines(path)):
        if count == row:
            return line
    raise AssertionError(row)


def _scan_pairs(path: Path) -> None:
    """Raise the error for the first malformed pair line (the fast parser refused the file)."""
    for line, fields in _lines(path):
        if len(fields) != PAIR_FIELDS:
            raise UsageError(f"{path}:{line}: expected TEMPLATE1 TEMPLATE2 LABEL ({PAIR_FIELDS} fields), "
                             f"got {len(fields)}")
        for field, what in zip(fields, ("template id", "template id", "label")):
            _number(path, line, field, what, int)
    raise UsageError(f"{path}: not a table of integers TEMPLATE1 TEMPLATE2 LABEL")


def _read_pairs(path: Path, known_templates: np.ndarray, template_path: Path):
    # np.loadtxt's C parser: IJB-C has 15.7 million pair lines; a slow scan names the line on failure
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # "input contained no data": refused below
            table = np.loadtxt(path, dtype=np.int64, comments=None, ndmin=2)
    except ValueError:
        _scan_pairs(path)
    if table.size == 0:
        raise UsageError(f"{path}: no pair lines")
    if table.shape[1] != PAIR_FIELDS:
        _scan_pairs(path)
    p1, p2, labels = (table[:, k].copy() for k in range(PAIR_FIELDS))
    bad_label = np.flatnonzero((labels != 0) & (labels != 1))
    if bad_label.size:
        row = int(bad_label[0])
        raise UsageError(f"{path}:{_pair_line_number(path, row)}: label {labels[row]} is not 0 (impostor) or 1 (genuine)")
    for column in (p1, p2):
        unknown = np.flatnonzero(~np.isin(column, known_templates))
        if unknown.size:
            row = int(unknown[0])
            raise UsageError(f"{path}:{_pair_line_number(path, row)}: template {column[row]} has no image in "
                             f"{template_path.name} ({unknown.size} pairs name unknown templates)")
    return p1, p2, labels.astype(np.int8)


def read_ijb(root, target: str, progress: bool = False) -> IJBMeta:
    """Read and check the 1:1 protocol of the IJB release at ``root`` for ``target`` (IJBB or IJBC);
    ``progress`` shows a line counter on stderr while the per-image lists are read. The images
    (``loose_crop/``) are not looked at: rescoring saved features needs only the meta files."""
    if target not in TARGETS:
        raise UsageError(f"--target {target}: expected one of {', '.join(TARGETS)}")
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"--ijb {root}: not a folder (expected an IJB release with meta/ and loose_crop/)")
    landmark_path, template_path, pair_path = meta_files(root, target)
    for path in (landmark_path, template_path, pair_path):
        if not path.is_file():
            raise UsageError(f"{path}: missing; an {target} release has meta/{path.name}")
    names, first_line, landmarks, faceness = _read_landmarks(landmark_path, progress)
    templates, medias = _read_template_media(template_path, landmark_path, first_line, progress)
    p1, p2, labels = _read_pairs(pair_path, np.unique(templates), template_path)
    return IJBMeta(root=root, target=target, names=np.array(names), templates=templates, medias=medias,
                   landmarks=landmarks, faceness=faceness, p1=p1, p2=p2, labels=labels)
