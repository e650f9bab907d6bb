"""Seeded split, scaling fitted on train only, target encoding and k-fold."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hone.config import DataConfig
from hone.data.base import Preprocessor
from hone.data.split import (
    build_tensor_data,
    encode_targets,
    fit_preprocessor,
    inverse,
    kfold,
    split_indices,
)
from hone.errors import ConfigError


def table(n: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g) * torch.tensor([1.0, 10.0, 0.1]) + torch.tensor(
        [5.0, -3.0, 0.0]
    )
    return x, x[:, :1] * 2.0  # (N, 3), (N, 1)


def test_split_sizes_and_seed():
    train, val, test = split_indices(100, 0.2, 0.1, seed=3)
    assert (len(train), len(val), len(test)) == (70, 20, 10)
    everything = torch.cat([train, val, test]).sort().values
    assert torch.equal(everything, torch.arange(100))  # disjoint and complete
    again = split_indices(100, 0.2, 0.1, seed=3)
    assert all(torch.equal(a, b) for a, b in zip((train, val, test), again, strict=True))
    other = split_indices(100, 0.2, 0.1, seed=4)
    assert not torch.equal(train, other[0])
    # The test set does not move when only the validation fraction changes.
    assert torch.equal(test, split_indices(100, 0.3, 0.1, seed=3)[2])
    # A non-zero fraction gets at least one sample; zero gets none.
    assert [len(s) for s in split_indices(10, 0.01, 0.0, seed=0)] == [9, 1, 0]


def test_split_leaving_no_training_data_is_a_config_error():
    with pytest.raises(ConfigError, match="--data.val_fraction"):
        split_indices(4, 0.5, 0.5, seed=0)


def test_standard_scaling_is_fitted_on_train_only():
    x, y = table()
    data = build_tensor_data(x, y, "regression", 1, DataConfig(normalize="standard"))
    train_x, val_x = data.train[0], data.val[0]
    assert torch.allclose(train_x.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(train_x.std(0, correction=0), torch.ones(3), atol=1e-4)
    assert val_x.mean(0).abs().max() > 1e-3  # val was scaled with train's statistics, not its own
    # The stored preprocessor reproduces the transform after a JSON round trip.
    pre = Preprocessor()
    pre.load_state_dict(json.loads(json.dumps(data.preprocessor.state_dict())))
    raw_val = inverse(data.preprocessor, val_x)
    assert torch.allclose(pre(raw_val), val_x, atol=1e-5)
    # Targets are not scaled.
    assert torch.allclose(
        data.train[1], inverse(data.preprocessor, train_x)[:, :1] * 2.0, atol=1e-4
    )


def test_minmax_maps_train_to_unit_range():
    x, y = table()
    data = build_tensor_data(x, y, "regression", 1, DataConfig(normalize="minmax"))
    assert torch.allclose(data.train[0].amin(0), torch.zeros(3))
    assert torch.allclose(data.train[0].amax(0), torch.ones(3))


@pytest.mark.parametrize("kind", ["standard", "minmax"])
def test_constant_feature_gives_zeros_not_nan(kind):
    x = torch.cat([torch.randn(50, 2), torch.full((50, 1), 7.25)], dim=1)
    pre = fit_preprocessor(x, kind)
    out = pre(x)
    assert torch.isfinite(out).all()
    assert pre.scale[2] == 1.0 and torch.equal(out[:, 2], torch.zeros(50))


def test_images_are_scaled_per_channel():
    x = torch.rand(20, 2, 4, 4) * torch.tensor([1.0, 100.0]).view(1, 2, 1, 1)
    pre = fit_preprocessor(x, "standard")
    assert (
        len(pre.shift) == 2 * 16 and len(set(pre.shift[:16])) == 1 and len(set(pre.shift[16:])) == 1
    )
    out = pre(x)
    assert torch.allclose(out.mean((0, 2, 3)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(out.std((0, 2, 3), correction=0), torch.ones(2), atol=1e-4)


def test_empty_validation_split_is_allowed():
    x, y = table(50)
    data = build_tensor_data(x, y, "regression", 1, DataConfig(val_fraction=0.0, test_fraction=0.2))
    assert len(data.val[0]) == 0 and data.val[0].shape[1:] == (3,)
    assert len(data.train[0]) == 40 and len(data.test[0]) == 10


def test_encode_targets():
    y, task, k, labels = encode_targets(np.array([3.0, 7.0, 9.0, 3.0]), "auto", "t")
    assert (task, k, labels) == ("classification", 3, [3, 7, 9])
    assert y.dtype == torch.int64 and y.tolist() == [0, 1, 2, 0]
    y, task, k, labels = encode_targets(np.array(["cat", "dog", "cat"]), "auto", "t")
    assert (task, k, labels, y.tolist()) == ("classification", 2, ["cat", "dog"], [0, 1, 0])
    y, task, k, _ = encode_targets(np.array([0.5, 1.5, 2.0]), "auto", "t")
    assert (task, k, y.shape, y.dtype) == ("regression", 1, (3, 1), torch.float32)
    y, task, k, _ = encode_targets(np.arange(25.0), "auto", "t")  # too many values for classes
    assert task == "regression"
    y, task, k, labels = encode_targets(np.array([-1, 1, 1, -1]), "binary", "t")
    assert (task, k, labels, y.dtype, y.tolist()) == (
        "binary",
        1,
        [-1, 1],
        torch.float32,
        [0, 1, 1, 0],
    )
    y, task, k, _ = encode_targets(np.ones((4, 2)), "auto", "t")
    assert (task, k, y.shape) == ("regression", 2, (4, 2))
    with pytest.raises(ConfigError, match="exactly 2"):
        encode_targets(np.array([0, 1, 2]), "binary", "t")
    with pytest.raises(ConfigError, match="--data.task"):
        encode_targets(np.array(["a", "b"]), "regression", "t")


def test_kfold_partitions_train_and_val():
    n = 103
    x = torch.stack([torch.arange(n, dtype=torch.float32), torch.randn(n)], dim=1)  # column 0 = id
    data = build_tensor_data(
        x, x[:, :1], "regression", 1, DataConfig(normalize="none", test_fraction=0.1)
    )
    pool = set(data.train[0][:, 0].tolist()) | set(data.val[0][:, 0].tolist())
    test_ids = data.test[0][:, 0].tolist()
    seen: list[float] = []
    for fold in range(4):
        f = kfold(data, k=4, fold=fold, seed=5)
        val_ids, train_ids = f.val[0][:, 0].tolist(), f.train[0][:, 0].tolist()
        assert set(val_ids).isdisjoint(train_ids) and set(val_ids) | set(train_ids) == pool
        assert len(val_ids) in (len(pool) // 4, len(pool) // 4 + 1)
        assert f.test[0][:, 0].tolist() == test_ids
        assert torch.equal(f.val[1][:, 0], f.val[0][:, 0])  # targets follow their samples
        seen += val_ids
    assert sorted(seen) == sorted(pool)  # each sample validates exactly once
    assert kfold(data, 4, 2, seed=5).val[0].tolist() == kfold(data, 4, 2, seed=5).val[0].tolist()


def test_kfold_refits_scaling_on_the_fold():
    x, y = table(120)
    data = build_tensor_data(x, y, "regression", 1, DataConfig(normalize="standard"))
    f = kfold(data, k=3, fold=1, seed=0)
    assert torch.allclose(f.train[0].mean(0), torch.zeros(3), atol=1e-4)
    assert f.preprocessor.shift != data.preprocessor.shift
    # Same raw test samples, re-scaled with the fold's statistics.
    assert torch.allclose(
        inverse(f.preprocessor, f.test[0]), inverse(data.preprocessor, data.test[0]), atol=1e-4
    )
    with pytest.raises(ConfigError, match="--cv"):
        kfold(data, k=1, fold=0, seed=0)
