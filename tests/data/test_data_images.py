"""digits, IDX files (MNIST layout) and image augmentation."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from hone.config import Config, DataConfig
from hone.data.augment import ShiftAndNoise, build_augment
from hone.data.base import Preprocessor
from hone.data.digits import digits
from hone.data.idx import fashion_mnist, mnist, read_idx, write_idx
from hone.errors import ConfigError


def config(name: str, **data) -> Config:
    cfg = Config()
    cfg.data.name = name
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return cfg


def test_digits_shapes():
    data = digits(config("digits", val_fraction=0.1, test_fraction=0.2))
    assert (
        data.task == "classification" and data.num_outputs == 10 and data.input_shape == (1, 8, 8)
    )
    assert data.train[0].shape == (1797 - 180 - 359, 1, 8, 8)  # 1,797 images
    assert len(data.val[0]) == 180 and len(data.test[0]) == 359
    assert data.train[0].dtype == torch.float32 and data.train[1].dtype == torch.int64
    assert set(data.train[1].unique().tolist()) == set(range(10))
    assert data.augment is None


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5) % 200
    array = array.astype(dtype)
    path = tmp_path / f"a{suffix}"
    write_idx(path, array)
    raw = path.read_bytes()
    header = gzip.decompress(raw)[:16] if suffix else raw[:16]
    assert header[:4] == bytes(
        [0, 0, {np.uint8: 8, np.int16: 11, np.float32: 13, np.float64: 14}[dtype], 3]
    )
    assert header[4:16] == bytes([0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 5])  # big-endian dims
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, array)


def test_idx_reads_big_endian_values(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE]))
    assert read_idx(path).tolist() == [258, -2]
    path.write_bytes(bytes([0, 0, 0x0B, 1, 0, 0, 0, 3, 0x01, 0x02]))
    with pytest.raises(ConfigError, match="truncated"):
        read_idx(path)
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(ConfigError, match="not an IDX file"):
        read_idx(path)


def write_mnist(folder, gz_test: bool) -> None:
    rng = np.random.default_rng(0)
    for prefix, n, gz in (("train", 40, False), ("t10k", 10, gz_test)):
        suffix = ".gz" if gz else ""
        write_idx(
            folder / f"{prefix}-images-idx3-ubyte{suffix}",
            rng.integers(0, 256, (n, 6, 5), dtype=np.uint8),
        )
        write_idx(
            folder / f"{prefix}-labels-idx1-ubyte{suffix}", (np.arange(n) % 10).astype(np.uint8)
        )


def test_mnist_from_idx_folder(tmp_path):
    write_mnist(tmp_path, gz_test=True)
    data = mnist(
        config("mnist", path=str(tmp_path), val_fraction=0.25, test_fraction=0.5, normalize="none")
    )
    assert data.input_shape == (1, 6, 5) and data.num_outputs == 10
    assert (len(data.train[0]), len(data.val[0]), len(data.test[0])) == (30, 10, 10)  # test = t10k
    expected = (
        torch.as_tensor(read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), dtype=torch.float32) / 255
    )
    assert torch.equal(data.test[0][:, 0], expected)
    assert data.test[1].tolist() == list(range(10))
    fashion = fashion_mnist(config("fashion_mnist", path=str(tmp_path)))
    assert fashion.class_labels[0] == "T-shirt/top" and len(fashion.class_labels) == 10


def test_mnist_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="--data.path"):
        mnist(config("mnist", path=str(tmp_path / "nowhere")))
    with pytest.raises(ConfigError, match="--data.path"):
        mnist(config("mnist", path=""))
    write_mnist(tmp_path, gz_test=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ConfigError, match=r"t10k-labels-idx1-ubyte .*--data.path"):
        mnist(config("mnist", path=str(tmp_path)))


def shifted(image: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """Reference: roll by (dy, dx) and overwrite the wrapped-around pixels with `fill`."""
    out = torch.roll(image, (dy, dx), dims=(-2, -1))
    if dy > 0:
        out[..., :dy, :] = fill
    if dy < 0:
        out[..., dy:, :] = fill
    if dx > 0:
        out[..., :, :dx] = fill
    if dx < 0:
        out[..., :, dx:] = fill
    return out


def test_shift_moves_each_image_within_range():
    image = torch.arange(1.0, 31.0).view(1, 1, 5, 6)
    x = image.repeat(64, 1, 1, 1)
    out = ShiftAndNoise(max_shift=2, noise_std=0.0, fill=(-3.0,))(
        x, torch.Generator().manual_seed(0)
    )
    assert out.shape == x.shape
    offsets = set()
    for sample in out:
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(sample, shifted(image[0], dy, dx, -3.0))
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 10  # per-sample shifts, not one shift for the batch


def test_augment_is_deterministic_given_the_generator():
    data = digits(config("digits", augment_shift=1, augment_noise=0.1))
    augment = data.augment
    assert isinstance(augment, ShiftAndNoise)
    # The fill is the scaled value of a blank (0) pixel.
    pre = data.preprocessor
    assert augment.fill[0] == pytest.approx(-pre.shift[0] / pre.scale[0])
    x = data.train[0][:32]
    a = augment(x, torch.Generator().manual_seed(11))
    b = augment(x, torch.Generator().manual_seed(11))
    c = augment(x, torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, x)
    noise_only = ShiftAndNoise(0, 0.1, (0.0,))(x, torch.Generator().manual_seed(0)) - x
    assert noise_only.std().item() == pytest.approx(0.1, rel=0.1)


def test_augment_needs_images():
    cfg = DataConfig(name="npz", augment_noise=0.1)
    with pytest.raises(ConfigError, match="--data.augment_shift=0"):
        build_augment(cfg, (5,), Preprocessor())
    with pytest.raises(ConfigError, match="smaller than the image"):
        build_augment(DataConfig(augment_shift=8), (1, 8, 8), Preprocessor())
    assert build_augment(DataConfig(), (1, 8, 8), Preprocessor()) is None
