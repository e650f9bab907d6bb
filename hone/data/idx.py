"""`mnist` and `fashion_mnist`: the standard IDX files in the folder `data.path`.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the values in C order, big-endian. The train files
are split into train and val by data.val_fraction; the t10k files are the test split.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hone.config import Config, opt, register_data_config
from hone.data.augment import AugmentConfig
from hone.data.base import DATASETS, TensorData
from hone.data.split import build_tensor_data
from hone.errors import ConfigError

# IDX type code -> big-endian numpy dtype.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_CODES = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_LABELS = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def _open(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a native-endian numpy array."""
    path = Path(path)
    raw = _open(path)
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in IDX_DTYPES:
        raise ConfigError(
            f"{path} is not an IDX file (bad magic number {raw[:4].hex()}); check --data.path"
        )
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = raw[4 + 4 * ndim :]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(body) != expected:
        raise ConfigError(
            f"{path} is truncated or corrupt: header shape {shape} needs {expected} bytes, found {len(body)}"
        )
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write `array` as an IDX file, gzipped when the name ends in .gz (tests, exports)."""
    path = Path(path)
    native = np.dtype(array.dtype).newbyteorder("=")
    assert native in IDX_CODES, f"IDX cannot hold dtype {array.dtype}"
    header = bytes([0, 0, IDX_CODES[native], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[IDX_CODES[native]]).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def _find(folder: Path, name: str, data_name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"{data_name}: {name} (or {name}.gz) not found in {folder}; set --data.path to the folder "
        "holding the four IDX files"
    )


def load_idx_folder(folder: str, data_name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (images, labels), 'test': (images, labels)} from the standard file names."""
    if not folder:
        raise ConfigError(
            f"data set {data_name!r} reads IDX files from a folder; set --data.path=FOLDER"
        )
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(
            f"data.path {folder!r} is not a folder; set --data.path to the folder holding the {data_name} IDX files"
        )
    out = {}
    for split, (images_name, labels_name) in FILES.items():
        images = read_idx(_find(root, images_name, data_name))
        labels = read_idx(_find(root, labels_name, data_name))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ConfigError(
                f"{data_name}: {images_name} {images.shape} and {labels_name} {labels.shape} must be "
                "(N, H, W) images and (N,) labels; check --data.path"
            )
        out[split] = (images, labels)
    return out


def _idx_data(cfg: Config, class_labels: list) -> TensorData:
    """Images (N, 1, H, W) float32 in [0, 1] from 0..255 bytes; int64 labels of 10 classes."""
    files = load_idx_folder(cfg.data.path, cfg.data.name)

    def tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = files[split]
        x = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1) / 255.0
        y = torch.as_tensor(labels.astype(np.int64))
        if len(y) and not 0 <= int(y.min()) <= int(y.max()) < len(class_labels):
            raise ConfigError(
                f"{cfg.data.name}: labels must lie in 0..{len(class_labels) - 1}, got {int(y.min())}..{int(y.max())}; check --data.path"
            )
        return x, y

    x, y = tensors("train")
    return build_tensor_data(
        x,
        y,
        "classification",
        len(class_labels),
        cfg.data,
        test=tensors("test"),
        class_labels=class_labels,
    )


@register_data_config("mnist")
@register_data_config("fashion_mnist")
@dataclass
class IdxConfig(AugmentConfig):
    path: str = opt("", "the folder holding the IDX files (train-images-idx3-ubyte[.gz], ...)")


@DATASETS.register("mnist")
def mnist(cfg: Config) -> TensorData:
    """MNIST handwritten digits, 28x28, from data.path."""
    return _idx_data(cfg, list(range(10)))


@DATASETS.register("fashion_mnist")
def fashion_mnist(cfg: Config) -> TensorData:
    """Fashion-MNIST clothing images, 28x28, from data.path (labels named for predict)."""
    return _idx_data(cfg, list(FASHION_LABELS))
