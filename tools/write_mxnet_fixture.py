"""Writes the mxnet reference dataset with the REAL mxnet 1.9.1: run it with the legacy venv's python.

usage: .venv-legacy/bin/python tools/write_mxnet_fixture.py OUT_DIR

OUT_DIR (created; must not hold a dataset yet) receives an insightface-layout dataset:
- ``train.rec``/``train.idx`` written by ``mx.recordio.MXIndexedRecordIO``:
  record 0 is the header ``IRHeader(flag=2, label=(7.0, 10.0), id=0, id2=1)`` with an empty
  payload; records 1..6 are 112x112 JPEGs (``mx.recordio.pack_img``, quality 90) with scalar
  labels 0,0,1,1,1,2 and ``id`` = record index; records 7..9 are identity records with an empty
  payload and labels (1,3), (3,6), (6,7) = [first, end) image record of identities 0, 1, 2.
- ``property``: ``3,112,112``.
- ``lfw.bin``: ``pickle.dump((bins, issame_list), f, protocol=pickle.HIGHEST_PROTOCOL)`` as
  insightface packs verification sets: 8 JPEG byte strings (pairs 0-1, 2-3, ...) and
  ``issame_list = [True, False, True, False]``.
- ``lfw_protocol2.bin``: the same pickled with protocol 2, as older Python 3 scripts wrote .bin
  files (bytes then pickle as ``_codecs.encode`` calls).
The images are smooth random colour fields with light noise drawn from fixed seeds, so every run
writes the same pixels (the JPEG bytes depend only on the OpenCV that mxnet encodes with).
"""
import os
import pickle
import sys

import cv2
import mxnet as mx
import numpy as np

SIZE = 112
IMAGE_LABELS = [0, 0, 1, 1, 1, 2]
BIN_PAIRS = [((3, 0), (3, 1), True), ((4, 0), (5, 0), False), ((5, 1), (5, 2), True), ((3, 2), (6, 0), False)]
QUALITY = 90


def face_like_image(identity: int, sample: int) -> np.ndarray:
    """A BGR uint8 image: an identity's smooth 6x6 colour field upsampled, plus per-sample noise."""
    base = np.random.RandomState(1000 + identity).uniform(30, 225, (6, 6, 3)).astype(np.float32)
    field = cv2.resize(base, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    noise = np.random.RandomState(10000 * identity + sample).normal(0, 6, field.shape)
    return np.clip(field + noise, 0, 255).astype(np.uint8)


def write_train(out: str) -> None:
    writer = mx.recordio.MXIndexedRecordIO(os.path.join(out, "train.idx"), os.path.join(out, "train.rec"), "w")
    first_identity = 1 + len(IMAGE_LABELS)
    identities = sorted(set(IMAGE_LABELS))
    writer.write_idx(0, mx.recordio.pack(mx.recordio.IRHeader(0, [first_identity, first_identity + len(identities)],
                                                               0, 1), b""))
    seen = {}
    for key, label in enumerate(IMAGE_LABELS, start=1):
        image = face_like_image(label, seen.setdefault(label, 0))
        seen[label] += 1
        writer.write_idx(key, mx.recordio.pack_img(mx.recordio.IRHeader(0, label, key, 0), image, quality=QUALITY))
    for offset, identity in enumerate(identities):
        keys = [key for key, label in enumerate(IMAGE_LABELS, start=1) if label == identity]
        writer.write_idx(first_identity + offset,
                         mx.recordio.pack(mx.recordio.IRHeader(0, [keys[0], keys[-1] + 1], first_identity + offset, 0), b""))
    writer.close()
    with open(os.path.join(out, "property"), "w") as f:
        f.write(f"{len(identities)},{SIZE},{SIZE}\n")


def write_bin(out: str) -> None:
    bins, issame_list = [], []
    for first, second, same in BIN_PAIRS:
        for identity, sample in (first, second):
            ok, jpeg = cv2.imencode(".jpg", face_like_image(identity, sample), [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
            assert ok
            bins.append(jpeg.tobytes())
        issame_list.append(same)
    for name, protocol in (("lfw.bin", pickle.HIGHEST_PROTOCOL), ("lfw_protocol2.bin", 2)):
        with open(os.path.join(out, name), "wb") as f:
            pickle.dump((bins, issame_list), f, protocol=protocol)


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    if os.path.exists(os.path.join(out, "train.rec")):
        sys.exit(f"{out} already holds train.rec: give an empty folder")
    write_train(out)
    write_bin(out)
    print(f"mxnet {mx.__version__}, numpy {np.__version__}: wrote {out}/train.rec, train.idx, property, lfw.bin, "
          "lfw_protocol2.bin")


if __name__ == "__main__":
    main(sys.argv[1])
