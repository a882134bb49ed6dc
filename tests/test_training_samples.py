"""The Dataset's hot path: one-parse reads, block-drawn coins, the uint8 layout and the batch
normalisation, each proven equal to the plain definitions (``unpack(read(k))``, one
``torch.rand(1)`` per image as torchvision's RandomHorizontalFlip, ``ToTensor`` +
``Normalize(0.5, 0.5)``)."""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch

from craft_plugin.data.recordio import MAGIC_BYTES, IRHeader, RecordFile, pack, unpack, write_records
from craft_plugin.data.transforms import CoinFlips, label_tensor, to_training_tensor
from craft_plugin.data.writer import write_rec
from craft_plugin.errors import RecordError
from craft_plugin._replica.synthetic import synthetic_image
from replica_helpers import run_python


def reference_tensor(rgb: np.ndarray, flip: bool) -> torch.Tensor:
    """torchvision's ToTensor then Normalize(mean=0.5, std=0.5), step by step in float32."""
    if flip:
        rgb = rgb[:, ::-1]
    chw = torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float().div(255)
    return chw.sub(0.5).div(0.5)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("shape", [(112, 112), (5, 7), (1, 1)])
def test_transform_is_bit_identical_to_totensor_normalize(shape, flip):
    rgb = np.random.default_rng(sum(shape)).integers(0, 256, shape + (3,), dtype=np.uint8)
    rgb.reshape(-1)[:256] = np.arange(256)[:rgb.size]  # every byte value where it fits
    expected = reference_tensor(rgb, flip)
    assert torch.equal(to_training_tensor(rgb, flip), expected)
    assert torch.equal(to_training_tensor(np.ascontiguousarray(rgb[..., ::-1]), flip, bgr=True), expected)
    assert to_training_tensor(rgb, flip).is_contiguous()


def test_transform_rejects_other_images():
    with pytest.raises(ValueError, match="3-channel uint8 HWC"):
        to_training_tensor(np.zeros((4, 4), np.uint8), False)
    with pytest.raises(ValueError, match="3-channel uint8 HWC"):
        to_training_tensor(np.zeros((4, 4, 3), np.float32), False)


def test_label_tensor_is_upstreams():
    for label in (0, 7, 2**40):
        ours, theirs = label_tensor(label), torch.tensor(label, dtype=torch.long)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape and ours.item() == theirs.item()


@pytest.mark.parametrize("in_worker", [False, True])
def test_coins_are_one_uniform_draw_per_image(monkeypatch, in_worker):
    if in_worker:
        monkeypatch.setattr("craft_plugin.data.transforms.get_worker_info", lambda: object())
    torch.manual_seed(3)
    expected = [torch.rand(1).item() < 0.5 for _ in range(20)]
    torch.manual_seed(3)
    coins = CoinFlips(block=6)  # in a worker, 20 coins cross three block boundaries
    assert [coins() for _ in range(20)] == expected
    assert len(set(expected)) == 2


def test_coins_in_the_main_process_follow_the_shared_generator():
    """With num_workers=0 other code draws from the same generator: coins are drawn one by one,
    so a reseed (or any other draw) takes effect at the next image, as upstream."""
    coins = CoinFlips()
    coins()
    torch.manual_seed(1)
    expected = [torch.rand(1).item() < 0.5 for _ in range(8)]
    torch.manual_seed(1)
    assert [coins() for _ in range(8)] == expected


def sample_payloads():
    """Records the fast path takes (whole, scalar label) and every kind it must hand over."""
    jpeg = pack(IRHeader(0, 4.0, 1, 0), b"\xff\xd8jpeg")
    return [(0, jpeg), (1, pack(IRHeader(2, np.array([3, 9], np.float32), 1, 2), b"")),
            (2, pack(IRHeader(0, 5.0, 2, 0), b"ab" + MAGIC_BYTES + b"cd")),  # unaligned magic: whole
            (3, pack(IRHeader(0, 6.0, 3, 0), b"abcd" + MAGIC_BYTES + b"efgh")),  # aligned magic: split
            (4, pack(IRHeader(0, 7.0, 4, 0), b"")), (5, b"short"),
            (6, pack(IRHeader(3, np.array([1, 2, 3], np.float32), 6, 0), MAGIC_BYTES + b"x"))]


def test_read_unpacked_equals_unpack_of_read(tmp_path):
    write_records(tmp_path / "x.rec", sample_payloads())
    records = RecordFile(tmp_path / "x.rec")
    for key in records.keys.tolist()[:-2] + [6]:
        header, body = records.read_unpacked(key)
        ref_header, ref_body = unpack(records.read(key))
        assert body == ref_body and type(body) is bytes
        assert (header.flag, np.asarray(header.label).tolist(), header.id, header.id2) == \
            (ref_header.flag, np.asarray(ref_header.label).tolist(), ref_header.id, ref_header.id2)
    with pytest.raises(ValueError, match=r"x.rec at byte offset \d+: record 5: 5 bytes, shorter than"):
        records.read_unpacked(5)


def test_read_unpacked_checks_what_the_fast_path_skips(tmp_path):
    payload = pack(IRHeader(0, 1.0, 0, 0), b"z" * 40)
    write_records(tmp_path / "x.rec", [(0, payload), (1, payload)])
    data = bytearray((tmp_path / "x.rec").read_bytes())
    data[72 + 4:72 + 8] = (len(payload) + 4).to_bytes(4, "little")  # last record overruns the file
    (tmp_path / "x.rec").write_bytes(bytes(data))
    records = RecordFile(tmp_path / "x.rec")
    assert records.read_unpacked(0)[1] == b"z" * 40
    with pytest.raises(RecordError, match="at byte offset 72: record truncated"):
        records.read_unpacked(1)
    data[0] ^= 1
    (tmp_path / "x.rec").write_bytes(bytes(data))
    with pytest.raises(RecordError, match="at byte offset 0: bad magic"):
        RecordFile(tmp_path / "x.rec").read_unpacked(0)


DATALOADER_EPOCH = textwrap.dedent("""
    import sys, torch
    from torch.utils.data import DataLoader
    from replica_helpers import hash_of
    side, root = sys.argv[1:]
    if side == "upstream":
        from craft_plugin._replica.data import MXFaceDataset
        dataset, loader_class = MXFaceDataset(root, 0), DataLoader
    else:
        from craft_plugin.data.dataloader import DeviceLoader
        from craft_plugin.data.dataset import RecFaceDataset
        dataset = RecFaceDataset(root, 0)
        assert dataset[0][0].dtype == torch.uint8  # normalised per batch by the loader
        loader_class = lambda **kwargs: DeviceLoader(None, **kwargs)
    dataset[0]  # coins drawn in the parent must not reach the workers
    loader = loader_class(dataset=dataset, batch_size=8, shuffle=True, num_workers=2,
                          generator=torch.Generator().manual_seed(5))
    batches = list(loader)
    assert len(batches) == 5 and all(images.dtype == torch.float32 for images, _ in batches)
    print(hash_of(tensor for batch in batches for tensor in batch))
""")


def test_dataset_batches_equal_upstreams_in_dataloader_workers(tmp_path, legacy_python):
    """A DataLoader epoch (2 workers, shuffled) of our uint8 items, normalised per batch by our
    loader, is byte for byte that of the replica's MXFaceDataset reading through the real mxnet
    (float items, a plain DataLoader): images, flips and labels."""
    write_rec(tmp_path, [(synthetic_image(4, k, 0, 20), k) for k in range(40)])
    upstream = run_python(legacy_python, DATALOADER_EPOCH, "upstream", str(tmp_path))
    assert run_python(sys.executable, DATALOADER_EPOCH, "craft", str(tmp_path)) == upstream
