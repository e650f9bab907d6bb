"""`digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download)."""

from __future__ import annotations

import torch

from hone.config import Config, register_data_config
from hone.data.augment import AugmentConfig
from hone.data.base import DATASETS, TensorData
from hone.data.split import build_tensor_data

DIGITS_MAX = 16.0  # pixel values of load_digits are counts 0..16

register_data_config("digits")(AugmentConfig)  # its own keys: the augmentation of its images


@DATASETS.register("digits")
def digits(cfg: Config) -> TensorData:
    """Images (N, 1, 8, 8) float32 in [0, 1] (a CNN uses them as is, an MLP flattens), 10 classes."""
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]  # lazy: slow import

    bunch = load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / DIGITS_MAX
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    return build_tensor_data(x, y, "classification", 10, cfg.data, class_labels=list(range(10)))
