"""mxnet RecordIO (``.rec`` + ``.idx``) read and written byte-for-byte without mxnet.

Record layout (dmlc-core ``RecordIOWriter``): uint32 magic 0xced7230a, uint32 ``lrec`` with
``cflag = lrec >> 29`` and ``length = lrec & (2**29 - 1)``, ``length`` payload bytes, zero padding to
a multiple of 4. A payload holding the magic at a 4-aligned offset is written in parts (cflag 1 =
first, 2 = middle, 3 = last; 0 = whole) with that magic dropped; reading re-inserts it. The
``.idx`` file has one ``key<TAB>byte_offset`` line per record.

Payloads of image datasets start with an ``IRHeader`` (``<IfQQ``: flag, label, id, id2). flag = 0:
the label is the float inline; flag > 0: ``flag`` float32 labels follow the header.

:class:`RecordFile` memory-maps the ``.rec`` lazily in each process, so it can be handed to
DataLoader workers (pickling drops the map; each worker opens its own).
"""
from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from craft_plugin.errors import RecordError

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
LENGTH_MASK = (1 << 29) - 1
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)
# a whole record's 8-byte head followed by its IRHeader, parsed in one call on the fast path
RECORD_AND_IR = struct.Struct("<II" + IR_FORMAT[1:])


class IRHeader(NamedTuple):
    """mxnet's image-record header (a namedtuple there too); ``label`` is a float, or a float32
    array when ``flag > 0``."""

    flag: int
    label: Union[float, np.ndarray]
    id: int
    id2: int


def pack(header: IRHeader, payload: bytes) -> bytes:
    """``mx.recordio.pack``: a scalar label goes inline, an array label after the header."""
    if np.ndim(header.label) == 0:
        return struct.pack(IR_FORMAT, 0, float(header.label), header.id, header.id2) + payload
    label = np.asarray(header.label, dtype=np.float32)
    return struct.pack(IR_FORMAT, label.size, 0.0, header.id, header.id2) + label.tobytes() + payload


def unpack(record: bytes, where: str = "record") -> Tuple[IRHeader, bytes]:
    """``mx.recordio.unpack``: ``(header, image bytes)``."""
    if len(record) < IR_SIZE:
        raise ValueError(f"{where}: {len(record)} bytes, shorter than the {IR_SIZE}-byte IRHeader")
    flag, label, id1, id2 = struct.unpack_from(IR_FORMAT, record)
    body = record[IR_SIZE:]
    if flag > 0:
        if len(body) < 4 * flag:
            raise ValueError(f"{where}: header announces {flag} labels, only {len(body)} bytes follow")
        label = np.frombuffer(body[:4 * flag], dtype=np.float32).copy()
        body = body[4 * flag:]
    return IRHeader(flag, label, id1, id2), body


def encode_record(payload: bytes) -> bytes:
    """The bytes dmlc-core writes for ``payload`` (split at aligned magics, padded)."""
    parts, start = [], 0
    aligned = len(payload) - len(payload) % 4
    for i in range(0, aligned, 4):
        if payload[i:i + 4] == MAGIC_BYTES:
            parts.append((1 if start == 0 else 2, payload[start:i]))
            start = i + 4
    parts.append((3 if start else 0, payload[start:]))
    out = bytearray()
    for cflag, data in parts:
        out += struct.pack("<II", MAGIC, (cflag << 29) | len(data)) + data
    out += b"\0" * (-len(payload) % 4)
    return bytes(out)


# the largest key or offset an .idx line may hold: numpy's int64 index (an offset this large is
# past the end of any file anyway; the check keeps a damaged number from overflowing the arrays)
INDEX_DIGITS = 18


def read_index(idx_path: Union[str, Path]) -> Dict[int, int]:
    """``key -> byte offset`` from an ``.idx`` file, in file order. A line that is not
    ``key<TAB>offset`` in ASCII digits (at most 18 of them), or a key listed twice, raises
    :class:`RecordError` naming the byte offset of the line in the ``.idx``."""
    idx_path = Path(idx_path)
    if not idx_path.exists():
        raise RecordError(str(idx_path), 0, "index file missing (expected key<TAB>offset lines)")
    index: Dict[int, int] = {}
    with open(idx_path, "rb") as handle:
        pos = 0
        for line in handle:
            fields = line.split()
            if fields:
                key_digits = fields[0][1:] if fields[0][:1] == b"-" else fields[0]
                if len(fields) != 2 or not (key_digits.isdigit() and fields[1].isdigit()):
                    raise RecordError(str(idx_path), pos, f"bad index line {line[:80]!r}: expected key<TAB>offset")
                if len(key_digits) > INDEX_DIGITS or len(fields[1]) > INDEX_DIGITS:
                    raise RecordError(str(idx_path), pos, f"bad index line {line[:80]!r}: a number of more than "
                                                          f"{INDEX_DIGITS} digits")
                key = int(fields[0])
                if key in index:
                    raise RecordError(str(idx_path), pos, f"key {key} is listed twice (first in the line at "
                                                          f"byte offset {first_line_of(idx_path, key)})")
                index[key] = int(fields[1])
            pos += len(line)
    return index


def first_line_of(idx_path: Path, key: int) -> int:
    """The byte offset of the first ``.idx`` line of ``key`` (for the error about a second one)."""
    with open(idx_path, "rb") as handle:
        pos = 0
        for line in handle:
            fields = line.split()
            if fields and fields[0].lstrip(b"-").isdigit() and int(fields[0]) == key:
                return pos
            pos += len(line)
    return -1


class RecordFile:
    """Random access to the records of a ``.rec`` through its ``.idx``."""

    def __init__(self, rec_path: Union[str, Path], idx_path: Optional[Union[str, Path]] = None):
        self.rec_path = str(rec_path)
        self.idx_path = str(idx_path) if idx_path else os.path.splitext(self.rec_path)[0] + ".idx"
        if not os.path.exists(self.rec_path):
            raise RecordError(self.rec_path, 0, "record file missing")
        index = read_index(self.idx_path)
        self.keys = np.fromiter(index.keys(), dtype=np.int64, count=len(index))
        self.offsets = np.fromiter(index.values(), dtype=np.int64, count=len(index))
        # 16 bytes per record; a key lookup is arithmetic when keys run 0..N-1 (or k..k+N-1)
        self._contiguous = bool(len(self.keys) == 0 or np.array_equal(
            self.keys, np.arange(self.keys[0], self.keys[0] + len(self.keys))))
        self._order = None if self._contiguous else np.argsort(self.keys, kind="stable")
        self._first = self.keys.item(0) if len(self.keys) else 0
        self.size = os.path.getsize(self.rec_path)
        self._map: Optional[mmap.mmap] = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_map"] = None
        return state

    def __len__(self) -> int:
        return len(self.keys)

    def _mapped(self) -> mmap.mmap:
        if self._map is None:
            with open(self.rec_path, "rb") as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        return self._map

    def position(self, key: int) -> int:
        """Index of ``key`` in the ``.idx`` order."""
        count = len(self.keys)
        if self._contiguous:
            pos = int(key) - self._first if count else -1
            found = 0 <= pos < count
        else:
            at = int(np.searchsorted(self.keys, key, sorter=self._order))
            pos = self._order.item(at) if at < count else -1
            found = pos >= 0 and self.keys.item(pos) == key
        if not found:
            raise RecordError(self.idx_path, 0, f"key {key} is not in the index")
        return pos

    def __contains__(self, key: int) -> bool:
        try:
            self.position(key)
        except RecordError:
            return False
        return True

    def offset_of(self, key: int) -> int:
        return self.offsets.item(self.position(key))

    def read(self, key: int) -> bytes:
        """The payload of record ``key`` (parts joined, magic re-inserted)."""
        return self.read_at(self.offset_of(key))[0]

    def read_unpacked(self, key: int) -> Tuple[IRHeader, bytes]:
        """``unpack(read(key))`` in one parse for the common record (whole, scalar label).

        Anything else (split records, array labels, damage) takes the general path, which
        checks every field and names the file and offset in its errors.
        """
        offset = self.offset_of(key)
        if offset + RECORD_AND_IR.size <= self.size:
            data = self._map if self._map is not None else self._mapped()
            magic, lrec, flag, label, id1, id2 = RECORD_AND_IR.unpack_from(data, offset)
            end = offset + 8 + lrec  # lrec is the length when cflag (its top 3 bits) is 0
            if magic == MAGIC and flag == 0 and IR_SIZE <= lrec <= LENGTH_MASK and end <= self.size:
                return IRHeader(0, label, id1, id2), data[offset + 8 + IR_SIZE:end]
        try:
            return unpack(self.read_at(offset)[0], f"record {key}")
        except RecordError:
            raise
        except ValueError as exc:
            raise RecordError(self.rec_path, offset, str(exc)) from exc

    def read_at(self, offset: int) -> Tuple[bytes, int]:
        """``(payload, offset of the next record)`` for the record starting at ``offset``."""
        data = self._mapped() if self.size else b""
        chunks: List[bytes] = []
        pos, expect_more = offset, True
        first = True
        while expect_more:
            if pos + 8 > self.size:
                problem = "offset past the end of the file" if first else "record truncated inside its parts"
                raise RecordError(self.rec_path, pos, f"{problem} (file size {self.size})")
            magic, lrec = struct.unpack_from("<II", data, pos)
            if magic != MAGIC:
                raise RecordError(self.rec_path, pos, f"bad magic 0x{magic:08x} (expected 0x{MAGIC:08x})")
            cflag, length = lrec >> 29, lrec & LENGTH_MASK
            if (first and cflag not in (0, 1)) or (not first and cflag not in (2, 3)):
                raise RecordError(self.rec_path, pos, f"unexpected part flag {cflag}")
            start = pos + 8
            if start + length > self.size:
                raise RecordError(self.rec_path, pos, f"record truncated: {length} bytes announced, "
                                                      f"{self.size - start} left in the file")
            pos_next = start + length + (-length % 4)
            if cflag == 0:  # a whole record: one copy, no joining
                return data[start:start + length], pos_next
            if not first:
                chunks.append(MAGIC_BYTES)
            chunks.append(data[start:start + length])
            pos = pos_next
            expect_more = cflag in (1, 2)
            first = False
        return b"".join(chunks), pos


def index_problems(records: RecordFile) -> List[RecordError]:
    """What the ``.idx`` promises and the ``.rec`` does not hold, found without reading every
    record: offsets past the end of the file, two keys at one offset (one record read twice), and
    the record at the largest offset (the one a truncated copy loses first) cut short. Training
    refuses the first before its first step; ``rec info`` and ``rec verify`` list them all."""
    problems = []
    past = records.offsets + 8 > records.size
    if past.any():
        key = int(records.keys[past].min())
        problems.append(RecordError(records.idx_path, 0,
                                    f"{int(past.sum())} of {len(records)} index entries point past the end of "
                                    f"{records.rec_path} ({records.size} bytes), from key {key} (offset past "
                                    f"the end: {int(records.offsets[records.keys == key][0])}): the .rec is "
                                    f"truncated or the .idx belongs to another file"))
    offsets, first = np.unique(records.offsets, return_index=True)
    if len(offsets) < len(records):
        twice = np.setdiff1d(np.arange(len(records)), first)
        key = int(records.keys[twice[0]])
        problems.append(RecordError(records.idx_path, 0,
                                    f"{len(twice)} index entries share a byte offset with another key, from key "
                                    f"{key} (offset {int(records.offsets[twice[0]])}): one record would be read "
                                    f"as two"))
    inside = records.offsets[~past]
    if inside.size:
        try:
            records.read_at(int(inside.max()))
        except RecordError as exc:
            problems.append(RecordError(exc.path, exc.offset, f"the last record: {exc.problem}"))
    return problems


def write_records(rec_path: Union[str, Path], records: Iterable[Tuple[int, bytes]],
                  idx_path: Optional[Union[str, Path]] = None) -> None:
    """Write ``(key, payload)`` records and their ``.idx``; files appear only when complete."""
    rec_path = Path(rec_path)
    idx_path = Path(idx_path) if idx_path else rec_path.with_suffix(".idx")
    tmp_rec, tmp_idx = rec_path.with_name(rec_path.name + ".tmp"), idx_path.with_name(idx_path.name + ".tmp")
    with open(tmp_rec, "wb") as rec, open(tmp_idx, "w") as idx:
        for key, payload in records:
            idx.write(f"{key}\t{rec.tell()}\n")
            rec.write(encode_record(payload))
    os.replace(tmp_rec, rec_path)
    os.replace(tmp_idx, idx_path)
