"""uint8 through the workers, normalised per batch where it lands: the layout, the normalisation
(bit for bit torchvision's float32 ops) and the loader's contract with the training loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from craft_plugin.data.dataloader import DeviceLoader, get_dataloader
from craft_plugin.data.dataset import RecFaceDataset
from craft_plugin.data.transforms import lookup, normalise, to_chw
from craft_plugin.data.writer import write_rec
from craft_plugin._replica.synthetic import synthetic_image


def torchvision_ops(images: torch.Tensor) -> torch.Tensor:
    """ToTensor's ``x.float().div(255)`` then Normalize(0.5, 0.5)'s ``sub_(0.5).div_(0.5)``, on the CPU."""
    return images.cpu().float().div(255).sub_(0.5).div_(0.5)


def every_byte(shape=(2, 3, 16, 16)) -> torch.Tensor:
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
    images.view(-1)[:256] = torch.arange(256, dtype=torch.uint8)
    return images


@pytest.mark.parametrize("normaliser", [normalise, lookup])
def test_normalisation_is_torchvisions_bit_for_bit(normaliser):
    images = every_byte()
    out = normaliser(images)
    assert out.dtype == torch.float32 and out.shape == images.shape and out.is_contiguous()
    assert torch.equal(out, torchvision_ops(images))
    assert torch.equal(normaliser(images[:, :, 2:9, 1:7]), torchvision_ops(images[:, :, 2:9, 1:7]))


def test_the_reciprocal_shortcut_would_be_caught():
    """What CUDA's div by a Python scalar computes, ``x * (1/255)``, is not ToTensor's ``x / 255``:
    the comparison above tells them apart."""
    x = torch.arange(256, dtype=torch.uint8)
    shortcut = x.float().mul(torch.tensor(1, dtype=torch.float32) / 255).sub_(0.5).div_(0.5)
    assert not torch.equal(shortcut, normalise(x))


def test_normalise_takes_uint8_only():
    with pytest.raises(TypeError, match="uint8"):
        normalise(torch.zeros(2, 3, 4, 4))


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("bgr", [False, True])
@pytest.mark.parametrize("shape", [(112, 112), (5, 7), (1, 1)])
def test_layout_is_rgb_chw_mirrored_on_the_coin(shape, bgr, flip):
    rgb = np.random.default_rng(sum(shape)).integers(0, 256, shape + (3,), dtype=np.uint8)
    expected = torch.from_numpy((rgb[:, ::-1] if flip else rgb).transpose(2, 0, 1).copy())
    given = np.ascontiguousarray(rgb[..., ::-1]) if bgr else rgb
    chw = to_chw(given, flip, bgr=bgr)
    assert chw.dtype == torch.uint8 and chw.is_contiguous() and torch.equal(chw, expected)
    assert np.array_equal(given, np.ascontiguousarray(rgb[..., ::-1]) if bgr else rgb)  # input untouched


def test_layout_of_a_strided_image():
    rgb = np.random.default_rng(3).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    view = rgb[:, ::2]
    assert torch.equal(to_chw(view, True), torch.from_numpy(view[:, ::-1].transpose(2, 0, 1).copy()))


def test_layout_rejects_other_images():
    for bad in (np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8)):
        with pytest.raises(ValueError, match="3-channel uint8 HWC"):
            to_chw(bad, False)


class Items(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], torch.tensor(index, dtype=torch.long)


def test_device_loader_normalises_uint8_batches_and_passes_float_ones():
    images = every_byte((6, 3, 8, 8))
    uint8_batches = list(DeviceLoader(None, dataset=Items(images), batch_size=3))
    assert [b[1].tolist() for b in uint8_batches] == [[0, 1, 2], [3, 4, 5]]
    assert torch.equal(torch.cat([b[0] for b in uint8_batches]), torchvision_ops(images))
    floats = torchvision_ops(images)
    float_batches = list(DeviceLoader(None, dataset=Items(floats), batch_size=3))
    assert torch.equal(torch.cat([b[0] for b in float_batches]), floats)


def test_the_training_loop_receives_what_upstreams_loader_gives(tmp_path):
    """Through get_dataloader (the hook's factory) with 2 workers: float32 (B, 3, H, W) in
    [-1, 1] and int64 labels; the workers hand over a quarter of float32's bytes."""
    write_rec(tmp_path, [(synthetic_image(1, k, 0, 24), k) for k in range(12)])
    dataset = RecFaceDataset(str(tmp_path))
    image, label = dataset[0]
    assert image.dtype == torch.uint8 and image.nbytes == 3 * 24 * 24 and label.dtype == torch.long
    loader = get_dataloader(str(tmp_path), 0, 4, seed=3, num_workers=2)
    batches = list(loader)
    assert len(batches) == 3
    for images, labels in batches:
        assert images.dtype == torch.float32 and images.shape == (4, 3, 24, 24)
        assert labels.dtype == torch.long and labels.shape == (4,)
        assert images.min() >= -1 and images.max() <= 1
    assert sorted(torch.cat([labels for _, labels in batches]).tolist()) == list(range(12))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the pinned, non-blocking copy")
def test_batches_on_cuda_equal_the_cpu_ones(tmp_path):
    write_rec(tmp_path, [(synthetic_image(2, k, 0, 24), k) for k in range(16)])
    dataset = RecFaceDataset(str(tmp_path))

    def epoch(device):
        loader = DeviceLoader(device, dataset=dataset, batch_size=4, num_workers=2, pin_memory=device is not None,
                              shuffle=True, generator=torch.Generator().manual_seed(1))
        return [(images.cpu(), labels.cpu(), images.device.type) for images, labels in loader]

    for (gpu, gpu_labels, where), (cpu, cpu_labels, _) in zip(epoch(torch.device("cuda", 0)), epoch(None)):
        assert where == "cuda" and torch.equal(gpu, cpu) and torch.equal(gpu_labels, cpu_labels)
