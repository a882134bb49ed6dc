"""The IJB embedding engine: features equal to eval_ijbc.py's loop written out here (serial decode,
align, interleaved image/flip batch, upstream's float conversion), the same with DataLoader workers,
an unreadable image named by its path, and the features record checked on rescoring."""
import argparse
import json

import cv2
import numpy as np
import pytest
import torch

from craft_plugin.cli import Parser, UsageError
from craft_plugin.evaluation.alignment import align_face
from craft_plugin.evaluation.ijb_embed import (aligned_batches, embed_ijb, features_record, open_features, shard,
                                                sidecar_path)
from craft_plugin.evaluation.ijb_meta import read_ijb
from craft_plugin.evaluation.models import add_model_arguments, load_embedder
from craft_plugin.evaluation.synthetic import write_synthetic_ijb
from eval_model_helpers import EMBEDDING_SIZE, MODULE, save_trained_tiny


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ijb")
    write_synthetic_ijb(root / "IJBC", identities=3, templates_per_identity=2, media_per_template=2, max_frames=2)
    net = save_trained_tiny(root / "model.pt")
    parser = Parser()
    add_model_arguments(parser)
    args = parser.parse_args([*MODULE, "--device", "cpu", "--batch-size", "4"])
    return read_ijb(root / "IJBC", "IJBC"), net, load_embedder(str(root / "model.pt"), args)


def upstream_loop(meta, net, batch_size=4):
    """eval_ijbc.py's get_image_feature: per image cv2.imread, align, [img, fliplr(img)] into a float64
    batch, torch.Tensor(batch) / 255 - 0.5) / 0.5, one forward per batch, reshaped to (B, 2 D)."""
    n = len(meta.names)
    feats = np.empty((n, 2 * EMBEDDING_SIZE), np.float32)
    for start in range(0, n, batch_size):
        rows = range(start, min(n, start + batch_size))
        batch = np.empty((2 * len(rows), 3, 112, 112))
        for k, i in enumerate(rows):
            img = align_face(cv2.imread(str(meta.image_path(i))), meta.landmarks[i])
            batch[2 * k] = np.transpose(img, (2, 0, 1))
            batch[2 * k + 1] = np.transpose(np.fliplr(img), (2, 0, 1))
        imgs = torch.Tensor(batch)
        imgs.div_(255).sub_(0.5).div_(0.5)
        with torch.no_grad():
            feats[start:start + len(rows)] = net(imgs).reshape(len(rows), 2 * EMBEDDING_SIZE).numpy()
    return feats


def test_features_are_upstreams_and_workers_change_nothing(setup, tmp_path):
    meta, net, embedder = setup
    embed_ijb(meta, embedder, tmp_path / "serial.npy", batch_size=4, workers=0, progress=False)
    embed_ijb(meta, embedder, tmp_path / "workers.npy", batch_size=3, workers=2, progress=False)
    serial, workers = np.load(tmp_path / "serial.npy"), np.load(tmp_path / "workers.npy")
    assert serial.shape == (len(meta.names), 2, EMBEDDING_SIZE) and serial.dtype == np.float32
    reference = upstream_loop(meta, net)
    # same images, same network: only the batch layout differs (float32 rounding of the convolutions)
    assert np.allclose(serial.reshape(len(meta.names), -1), reference, rtol=0, atol=1e-5 * np.abs(reference).max())
    assert np.allclose(workers, serial, rtol=0, atol=1e-5 * np.abs(reference).max())
    # the flip view really is the mirror image's embedding, not a copy of the first
    assert np.abs(serial[:, 0] - serial[:, 1]).max() > 1e-3


def test_shards_cover_the_images_once():
    for n in (1, 7, 8, 53):
        for world in (1, 2, 3):
            parts = [list(shard(n, r, world)) for r in range(world)]
            assert sum(parts, []) == list(range(n))


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_are_the_aligned_faces_in_order(setup, workers):
    """Each batch assembled in a worker is exactly the faces align_face gives for those images, in the
    shard's order with the last batch short; OpenCV's thread count in this process is left as it was."""
    meta, _, _ = setup
    chosen = list(range(2, len(meta.names)))
    threads = cv2.getNumThreads()
    batches = list(aligned_batches(meta, chosen, batch_size=3, workers=workers))
    assert cv2.getNumThreads() == threads
    assert [len(b[0]) for b in batches] == [3] * (len(chosen) // 3) + ([len(chosen) % 3] if len(chosen) % 3 else [])
    indices = torch.cat([b[0] for b in batches])
    faces = torch.cat([b[1] for b in batches])
    assert indices.tolist() == chosen and faces.dtype == torch.uint8
    expected = np.stack([align_face(cv2.imread(str(meta.image_path(i))), meta.landmarks[i]) for i in chosen])
    assert np.array_equal(faces.numpy(), expected.transpose(0, 3, 1, 2))
    assert all(p == "" for b in batches for p in b[2])


@pytest.mark.parametrize("workers", [0, 2])
def test_an_unreadable_image_is_named(setup, tmp_path, workers):
    meta, _, embedder = setup
    broken = meta.image_path(5)
    original = broken.read_bytes()
    try:
        broken.write_bytes(original[: len(original) // 2])
        with pytest.raises(UsageError) as info:
            embed_ijb(meta, embedder, tmp_path / "f.npy", batch_size=4, workers=workers, progress=False)
        assert str(info.value).startswith(f"{broken}: ") and "\n" not in str(info.value)
        broken.unlink()
        with pytest.raises(UsageError, match=f"{broken}: cannot be read"):
            embed_ijb(meta, embedder, tmp_path / "f.npy", batch_size=4, workers=workers, progress=False)
    finally:
        broken.write_bytes(original)


def test_the_features_record_refuses_other_data_and_models(setup, tmp_path):
    meta, _, embedder = setup
    path = tmp_path / "f.npy"
    embed_ijb(meta, embedder, path, batch_size=8, workers=0, progress=False)
    record = features_record(meta, embedder)
    with pytest.raises(UsageError, match="record f.npy.json is missing"):
        open_features(path, record)
    sidecar_path(path).write_text(json.dumps(record))
    assert np.array_equal(open_features(path, record), np.load(path))
    for key, value in (("images", 3), ("meta_sha256", "0" * 64), ("target", "IJBB")):
        with pytest.raises(UsageError, match=f"holds features of other data \\({key} "):
            open_features(path, {**record, key: value})
    with pytest.raises(UsageError, match="was embedded by another model"):
        open_features(path, {**record, "model": {**record["model"], "path": "/elsewhere/model.pt"}})
    # the device and batch size do not change what the features are
    assert open_features(path, {**record, "model": {**record["model"], "device": "cuda:1", "batch_size": 7}}) is not None
    np.save(path, np.zeros((len(meta.names), 2, EMBEDDING_SIZE), np.float64))
    with pytest.raises(UsageError, match=r"holds float64 .* expected float32"):
        open_features(path, record)
