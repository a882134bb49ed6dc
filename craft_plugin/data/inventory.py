"""Facts about a ``.rec`` dataset (``rec info``) and a full integrity walk (``rec verify``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterator, List, Tuple, Union

from craft_plugin.data.dataset import header_label, image_keys, insightface_header, read_property, sample_problem
from craft_plugin.data.recordio import RecordFile, unpack
from craft_plugin.data.transforms import decode_rgb
from craft_plugin.errors import RecordError


def open_records(path: Union[str, Path]) -> RecordFile:
    """A ``.rec`` file, or the ``train.rec`` of a dataset folder."""
    path = Path(path)
    return RecordFile(path / "train.rec" if path.is_dir() else path)


def info(path: Union[str, Path]) -> Dict:
    records = open_records(path)
    keys = image_keys(records)
    header = insightface_header(records)
    first_image, first_body = unpack(records.read(int(keys[0])), records.rec_path)
    facts = {"rec": records.rec_path, "idx": records.idx_path, "records": len(records), "images": len(keys),
             "layout": "insightface (header record 0)" if header is not None else "no header (im2rec/shuffled)",
             "label": "array (first value is the class)" if first_image.flag > 0 else "scalar",
             "file_bytes": records.size}
    if header is not None:
        facts["identities"] = int(header.label[1]) - int(header.label[0])
    image = decode_rgb(first_body, f"{records.rec_path} record {int(keys[0])}")
    facts["image_size"] = list(image.shape[:2])
    prop = Path(records.rec_path).with_name("property")
    if prop.exists():
        facts["property"] = prop.read_text().splitlines()[0].strip()
    return facts


def verify(path: Union[str, Path]) -> Iterator[Dict]:
    """Yields one dict per record: ``{"key", "offset", "problem"}`` (``problem`` None when fine;
    it does not repeat the key or offset)."""
    records = open_records(path)
    images = set(image_keys(records).tolist())
    prop = read_property(os.path.dirname(records.rec_path))
    for key, offset in zip(records.keys.tolist(), records.offsets.tolist()):
        problem = None
        try:
            header, body = unpack(records.read_at(offset)[0], "the record")
            if key in images:
                problem = sample_problem(decode_rgb(body, "the image").shape, header_label(header), prop)
        except RecordError as exc:
            problem = exc.problem
        except ValueError as exc:
            problem = str(exc)
        yield {"key": key, "offset": offset, "problem": problem}


IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp"}


def identity_files(folder: Union[str, Path]) -> List[Tuple[Path, List[Path]]]:
    """``[(identity folder, its image files)]`` in sorted order; label = position in the list.
    A folder without sub-folders, or an identity folder without images, is refused (naming it):
    dropping it would shift every later label."""
    if not Path(folder).is_dir():
        raise ValueError(f"{folder}: no such folder")
    subdirs = sorted(p for p in Path(folder).iterdir() if p.is_dir())
    if not subdirs:
        raise ValueError(f"{folder}: expected one sub-folder per identity, found none")
    identities = [(sub, sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)) for sub in subdirs]
    empty = [str(sub) for sub, files in identities if not files]
    if empty:
        raise ValueError(f"identity folders without images ({', '.join(sorted(IMAGE_EXTENSIONS))}): {empty[:5]}"
                         f"{f' and {len(empty) - 5} more' if len(empty) > 5 else ''}; remove them or add images")
    return identities


def folder_images(identities: List[Tuple[Path, List[Path]]]) -> Iterator[Tuple[bytes, int]]:
    """``(encoded bytes, label)`` for every image of :func:`identity_files`' list, each checked to decode."""
    for label, (_, files) in enumerate(identities):
        for file in files:
            data = file.read_bytes()
            decode_rgb(data, str(file))
            yield data, label
