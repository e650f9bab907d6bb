"""A user data set factory for the `custom` data set's contract (data.target = this module:factory)."""

from __future__ import annotations

import numpy as np


def factory(num_samples: int = 40, num_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(x (N, 4) distinct rows, y (N,) integer classes): read as a classification task."""
    x = np.random.default_rng(0).normal(size=(num_samples, 4))
    return x, np.arange(num_samples) % num_classes
