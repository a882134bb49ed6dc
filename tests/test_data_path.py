"""Our data path in a patched run: reader selection, loaders that fail loudly, .bin loading and
the verification protocol."""
from __future__ import annotations

import json
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from easydict import EasyDict
from hang_guard import hang_guard

from craft_plugin.data import rec_reader_feature as data_feature
from craft_plugin.data.binfile import load_bin, read_bin_pairs
from craft_plugin.data.dataloader import get_dataloader
from craft_plugin.data.recordio import IRHeader, RecordFile, pack, write_records
from craft_plugin.data.transforms import encode_jpeg
from craft_plugin.data.verification import CallBackVerification, kfold_accuracy
from craft_plugin.data.writer import write_bin, write_rec
from craft_plugin.errors import ConfigError
from craft_plugin._replica.synthetic import synthetic_image

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("choice,mxnet_ok,enabled", [
    (None, True, False), (None, False, True), ("auto", False, True), ("craft", True, True), ("mxnet", True, False)])
def test_reader_selection(monkeypatch, choice, mxnet_ok, enabled):
    monkeypatch.setattr(data_feature, "mxnet_problem", lambda: None if mxnet_ok else "AttributeError: np.bool")
    feature = data_feature.RecReaderFeature.from_config(EasyDict(rec_reader=choice))
    assert (feature is not None) == enabled


def test_reader_selection_errors(monkeypatch):
    monkeypatch.setattr(data_feature, "mxnet_problem", lambda: "ModuleNotFoundError: No module named 'mxnet'")
    with pytest.raises(ConfigError, match="config.rec_reader = 'mxnet'.*cannot be imported"):
        data_feature.RecReaderFeature.from_config(EasyDict(rec_reader="mxnet"))
    with pytest.raises(ConfigError, match="config.rec_reader"):
        data_feature.RecReaderFeature.from_config(EasyDict(rec_reader="dali"))


def test_factory_uses_our_reader_for_rec_folders_and_upstream_otherwise(tmp_path):
    write_rec(tmp_path, [(synthetic_image(0, k // 2, k % 2, 24), k // 2) for k in range(8)])
    feature = data_feature.RecReaderFeature()
    upstream_calls = []
    factory = feature.dataloader_factory(lambda *args: upstream_calls.append(args) or "upstream", EasyDict())
    loader = factory(str(tmp_path), 0, 4, False, False, 7, 0)
    images, labels = next(iter(loader))
    assert images.shape == (4, 3, 24, 24) and labels.dtype == torch.long
    assert factory("synthetic", 0, 4, False, False, 7, 0) == "upstream"
    assert upstream_calls == [("synthetic", 0, 4, False, False, 7, 0)]
    assert feature.verification_class(object, EasyDict()) is CallBackVerification


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_record_fails_the_loop_naming_file_and_offset(tmp_path, workers):
    good = pack(IRHeader(0, 0.0, 0, 0), encode_jpeg(synthetic_image(0, 0, 0, 16)))
    records = [(k, good) for k in range(7)] + [(7, pack(IRHeader(0, 1.0, 7, 0), b"\xff\xd8garbage"))]
    write_records(tmp_path / "train.rec", records)
    offset = RecordFile(tmp_path / "train.rec").offset_of(7)
    loader = get_dataloader(str(tmp_path), 0, 2, num_workers=workers, seed=1)
    epochs_of_batches = []
    with hang_guard(120, "the loader loop"), pytest.raises(ValueError) as info:
        for epoch in range(2):
            for _ in loader:
                epochs_of_batches.append(epoch)
    # the first epoch (4 batches of 2) fails at the batch holding record 7: nothing is skipped
    assert len(epochs_of_batches) < 4 and set(epochs_of_batches) <= {0}
    assert f"train.rec record 7 at byte offset {offset}" in str(info.value)


def python2_style_bin(entries, issame) -> bytes:
    """A .bin as Python 2 pickled it: byte strings as SHORT_BINSTRING/BINSTRING opcodes."""
    out = bytearray(b"\x80\x02]q\x00(")
    for entry in entries:
        out += (b"U" + bytes([len(entry)]) if len(entry) < 256 else b"T" + len(entry).to_bytes(4, "little")) + entry
    out += b"e]q\x01(" + b"".join(b"\x88" if s else b"\x89" for s in issame) + b"e\x86q\x02."
    return bytes(out)


def test_python2_bins_and_numpy_entries(tmp_path):
    images = [synthetic_image(3, k, 0, 20) for k in range(4)]
    jpegs = [encode_jpeg(img) for img in images]
    path = tmp_path / "old.bin"
    path.write_bytes(python2_style_bin(jpegs, [True, False]))
    bins, issame = read_bin_pairs(str(path))
    assert bins == jpegs and issame == [True, False]
    path = tmp_path / "arrays.bin"
    path.write_bytes(pickle.dumps((images, [True, False]), protocol=4))
    data, _ = load_bin(str(path), (20, 20))
    assert torch.equal(data[0][1], torch.from_numpy(images[1].transpose(2, 0, 1).copy()).float())
    assert torch.equal(data[1], data[0].flip(3))


def test_bin_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([Evil(), b""], [True])))
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        load_bin(str(path))


def test_load_bin_equals_mxnet_decoding(legacy_python, mxnet_fixture_dir, tmp_path):
    bins, issame = read_bin_pairs(str(mxnet_fixture_dir / "lfw.bin"))
    spec = {"write": [], "decode": [b.hex() for b in bins]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    subprocess.run([str(legacy_python), str(HERE / "mxnet_reference.py"), str(tmp_path / "spec.json"),
                    str(tmp_path)], check=True, timeout=300)
    data, got_issame = load_bin(str(mxnet_fixture_dir / "lfw.bin"), (112, 112))
    assert got_issame == issame == [True, False, True, False]
    for i in range(len(bins)):
        reference = torch.from_numpy(np.load(tmp_path / f"decoded_{i}.npy").transpose(2, 0, 1).copy()).float()
        assert torch.equal(data[0][i], reference)
        assert torch.equal(data[1][i], reference.flip(2))


def test_protocol_2_bin_loads_like_the_highest_protocol(mxnet_fixture_dir):
    """The fixture's lfw_protocol2.bin (bytes pickled as _codecs.encode calls) holds the same pairs."""
    assert read_bin_pairs(str(mxnet_fixture_dir / "lfw_protocol2.bin")) == read_bin_pairs(str(mxnet_fixture_dir / "lfw.bin"))
    old, _ = load_bin(str(mxnet_fixture_dir / "lfw_protocol2.bin"), (112, 112))
    new, _ = load_bin(str(mxnet_fixture_dir / "lfw.bin"), (112, 112))
    assert all(torch.equal(a, b) for a, b in zip(old, new))


def brute_force_accuracy(dist, issame, folds=10):
    """Written independently of the library: explicit folds, every threshold, first best."""
    n = len(dist)
    thresholds = [i / 100 for i in range(400)]
    fold_of = []
    for f in range(folds):
        fold_of += [f] * (n // folds + (1 if f < n % folds else 0))
    accs = []
    for f in range(folds):
        train = [i for i in range(n) if fold_of[i] != f]
        test = [i for i in range(n) if fold_of[i] == f]
        best, best_acc = None, -1.0
        for t in thresholds:
            acc = sum((dist[i] < t) == issame[i] for i in train) / len(train)
            if acc > best_acc:
                best, best_acc = t, acc
        accs.append(sum((dist[i] < best) == issame[i] for i in test) / len(test))
    return float(np.mean(accs))


def test_lfw_sized_set_with_tied_far_values():
    rng = np.random.default_rng(0)
    issame = rng.random(6000) < 0.5
    dist = np.where(issame, rng.normal(0.9, 0.3, 6000), rng.normal(1.6, 0.3, 6000))
    dist = np.clip(np.round(dist, 1), 0, 3.99)  # few distinct values: FAR ties everywhere
    acc = kfold_accuracy(dist, issame).mean()
    subset = slice(0, 600)  # the brute force is slow in Python; same protocol on 600 pairs
    assert kfold_accuracy(dist[subset], issame[subset]).mean() == pytest.approx(
        brute_force_accuracy(dist[subset].tolist(), issame[subset].tolist()), abs=1e-12)
    assert 0.8 < acc < 1.0


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 16 * 16, 8)

    def forward(self, x):
        return self.proj(x.flatten(1))


def test_verification_on_a_bin_smaller_than_one_batch(tmp_path):
    pairs = [(synthetic_image(4, k, 0, 16), synthetic_image(4, k if k % 2 == 0 else k + 1, 1, 16), k % 2 == 0)
             for k in range(4)]
    write_bin(tmp_path / "tiny.bin", pairs)
    callback = CallBackVerification(["tiny"], str(tmp_path), image_size=(16, 16))
    net = TinyNet()
    callback(1, net)
    acc = callback.last_results["tiny"]
    data, issame = callback.sets[0]
    with torch.no_grad():
        emb = net((data[0] / 255 - 0.5) / 0.5) + net((data[1] / 255 - 0.5) / 0.5)
    emb = torch.nn.functional.normalize(emb.double()).numpy()
    dist = ((emb[0::2] - emb[1::2]) ** 2).sum(1)
    assert acc == pytest.approx(brute_force_accuracy(dist.tolist(), issame, folds=4), abs=1e-12)
    with pytest.raises(FileNotFoundError, match="config.val_targets names 'lfw'"):
        CallBackVerification(["lfw"], str(tmp_path))
