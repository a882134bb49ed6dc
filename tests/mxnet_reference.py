"""Run with the legacy venv's python (real mxnet 1.9.1): the reference side of the reader tests.

usage: python mxnet_reference.py SPEC.json OUT_DIR
SPEC: {"write": [[key, hex payload], ...], "read": "path/to/file.rec", "unpack": [keys to unpack
(default: all)], "decode": [hex JPEG, ...]}
Writes OUT_DIR/mx.rec/.idx with MXIndexedRecordIO, and OUT_DIR/result.json with what mxnet reads
from SPEC["read"] (payloads and unpacked headers) and OUT_DIR/decoded_<i>.npy for each image.
"""
import json
import os
import sys

import mxnet as mx
import numpy as np

spec = json.load(open(sys.argv[1]))
out = sys.argv[2]
writer = mx.recordio.MXIndexedRecordIO(os.path.join(out, "mx.idx"), os.path.join(out, "mx.rec"), "w")
for key, payload in spec["write"]:
    writer.write_idx(key, bytes.fromhex(payload))
writer.close()
result = {"read": []}
if spec.get("read"):
    rec = spec["read"]
    reader = mx.recordio.MXIndexedRecordIO(os.path.splitext(rec)[0] + ".idx", rec, "r")
    for key in reader.keys:
        raw = reader.read_idx(key)
        if key not in spec.get("unpack", [key]):
            result["read"].append([key, raw.hex(), None, None, None, None, None])
            continue
        header, body = mx.recordio.unpack(raw)
        label = header.label.tolist() if isinstance(header.label, np.ndarray) else header.label
        result["read"].append([key, raw.hex(), header.flag, label, header.id, header.id2, body.hex()])
for i, payload in enumerate(spec.get("decode", [])):
    np.save(os.path.join(out, f"decoded_{i}.npy"), mx.image.imdecode(bytes.fromhex(payload)).asnumpy())
json.dump(result, open(os.path.join(out, "result.json"), "w"))
