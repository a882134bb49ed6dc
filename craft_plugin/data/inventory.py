"""Facts about a ``.rec`` dataset (``rec info``) and a full integrity walk (``rec verify``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Set, Tuple, Union

import numpy as np

from craft_plugin.data.dataset import (header_label, header_range, image_keys, insightface_header, read_property,
                                       sample_problem)
from craft_plugin.data.recordio import RecordFile, index_problems, unpack
from craft_plugin.data.transforms import decode_rgb
from craft_plugin.errors import RecordError


def open_records(path: Union[str, Path]) -> RecordFile:
    """A ``.rec`` file, or the ``train.rec`` of a dataset folder."""
    path = Path(path)
    return RecordFile(path / "train.rec" if path.is_dir() else path)


def info(records: RecordFile) -> Dict:
    """Facts about a dataset: layout, counts, label kind, image size, ``property``. Damage that
    stops them raises RecordError (or ValueError for an image) naming the file and offset."""
    keys = image_keys(records)
    header = insightface_header(records)
    first_key = int(keys[0])
    first_image, first_body = records.read_unpacked(first_key)
    facts = {"rec": records.rec_path, "idx": records.idx_path, "records": len(records), "images": len(keys),
             "layout": "insightface (header record 0)" if header is not None else "no header (im2rec/shuffled)",
             "label": "array (first value is the class)" if first_image.flag > 0 else "scalar",
             "file_bytes": records.size}
    if header is not None:
        first_identity, end = header_range(records, header)
        facts["identities"] = end - first_identity
    image = decode_rgb(first_body, f"{records.rec_path} record {first_key} at byte offset "
                                   f"{records.offset_of(first_key)}")
    facts["image_size"] = list(image.shape[:2])
    prop = read_property(os.path.dirname(records.rec_path))
    if prop is not None:
        facts["property"] = ",".join(map(str, prop))
    return facts


class Plan(NamedTuple):
    """What a walk over a dataset checks each record against: its image keys and ``property``."""

    images: Set[int]
    prop: Optional[Tuple[int, int, int]]


def plan(records: RecordFile) -> Plan:
    """The dataset-level checks training makes before its first step (the index against the file,
    the header record against the index, ``property``); the first failure raises RecordError."""
    problems = index_problems(records)
    if problems:
        raise problems[0]
    return Plan(set(image_keys(records).tolist()), read_property(os.path.dirname(records.rec_path)))


def verify(records: RecordFile, checks: Plan) -> Iterator[Dict]:
    """Yields one dict per record, in index order: ``{"key", "offset", "problem"}`` (``problem``
    None when fine; it does not repeat the key or offset). Records are checked as training reads
    them; those that are not images (header, identity records) only for their framing. Then, as
    mxnet's writer lays records end to end, one more dict for each place where the indexed records
    do not tile the file (bytes no index line points to: a lost ``.idx`` line, an appended record,
    an offset into the middle of a record)."""
    ends = np.full(len(records), -1, dtype=np.int64)
    for position, (key, offset) in enumerate(zip(records.keys.tolist(), records.offsets.tolist())):
        problem = None
        try:
            record, ends[position] = records.read_at(offset)
            header, body = unpack(record, "the record")
            if key in checks.images:
                problem = sample_problem(decode_rgb(body, "the image").shape, header_label(header), checks.prop)
        except RecordError as exc:
            problem = exc.problem
        except ValueError as exc:
            problem = str(exc)
        yield {"key": key, "offset": offset, "problem": problem}
    yield from tiling_problems(records, ends)


def tiling_problems(records: RecordFile, ends: np.ndarray) -> Iterator[Dict]:
    """Where the records, sorted by offset, leave a gap, overlap, or stop short of the end of the
    file (``ends``: where each record ends, -1 for one that could not be read)."""
    order = np.argsort(records.offsets, kind="stable")
    starts, stops = records.offsets[order], ends[order]
    if len(starts) and starts[0] != 0 and stops[0] >= 0:
        yield {"key": int(records.keys[order[0]]), "offset": int(starts[0]),
               "problem": f"the first indexed record starts at byte {int(starts[0])}: bytes 0..{int(starts[0]) - 1} "
                          f"are in no indexed record"}
    following = np.append(starts[1:], records.size)
    for at in np.flatnonzero((stops >= 0) & (stops != following)).tolist():
        what = ("the end of the file" if at == len(starts) - 1 else
                f"the next indexed record (byte {int(following[at])})")
        gap = int(following[at]) - int(stops[at])
        yield {"key": int(records.keys[order[at]]), "offset": int(starts[at]),
               "problem": f"the record ends at byte {int(stops[at])} and {what} "
                          + (f"follows {gap} bytes later: bytes in no indexed record (a lost .idx line or an "
                             f"appended record)" if gap > 0 else f"starts {-gap} bytes before it: records overlap")}


IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp"}


def identity_images(folder: Path) -> List[Path]:
    """The image files of one identity folder, sorted."""
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)


def identity_folders(folder: Union[str, Path]) -> List[Tuple[Path, int]]:
    """``[(identity folder, its number of images)]`` in sorted order; label = position in the
    list. A folder without sub-folders, or an identity folder without images, is refused (naming
    it): dropping it would shift every later label. Only counts are kept, not the file names, so
    that ``rec pack`` holds one identity's names at a time."""
    if not Path(folder).is_dir():
        raise ValueError(f"{folder}: no such folder")
    subdirs = sorted(p for p in Path(folder).iterdir() if p.is_dir())
    if not subdirs:
        raise ValueError(f"{folder}: expected one sub-folder per identity, found none")
    identities = [(sub, len(identity_images(sub))) for sub in subdirs]
    empty = [str(sub) for sub, count in identities if not count]
    if empty:
        raise ValueError(f"identity folders without images ({', '.join(sorted(IMAGE_EXTENSIONS))}): {empty[:5]}"
                         f"{f' and {len(empty) - 5} more' if len(empty) > 5 else ''}; remove them or add images")
    return identities


def folder_images(identities: List[Tuple[Path, int]]) -> Iterator[Tuple[Path, int]]:
    """``(image file, label)`` for every image of :func:`identity_folders`' list, in label order,
    listing one identity folder at a time; a folder whose images changed since it was counted is
    an error (its labels would no longer be the ones counted)."""
    for label, (folder, count) in enumerate(identities):
        files = identity_images(folder)
        if len(files) != count:
            raise ValueError(f"{folder}: {len(files)} images now, {count} when the folders were listed: "
                             f"the folder changed while packing")
        for file in files:
            yield file, label
