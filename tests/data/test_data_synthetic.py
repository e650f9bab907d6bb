"""synthetic_linear: seeded, and its truth matches the data the model sees."""

from __future__ import annotations

import pytest
import torch

from hone.config import Config
from hone.data.split import kfold
from hone.data.synthetic import synthetic_linear


def config(**data) -> Config:
    cfg = Config()
    cfg.data.name = "synthetic_linear"
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return cfg


def lstsq(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    design = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    return torch.linalg.lstsq(design, y.double()).solution[:, 0]  # (features + 1,)


@pytest.mark.parametrize("normalize", ["standard", "minmax", "none"])
def test_truth_is_recovered_by_least_squares(normalize):
    noise, n = 0.1, 2000
    data = synthetic_linear(config(num_samples=n, num_features=4, noise=noise, normalize=normalize))
    assert data.task == "regression" and data.num_outputs == 1 and data.train[1].shape == (1400, 1)
    coef = lstsq(*data.train)
    truth = torch.tensor(data.truth["w_model"] + [data.truth["b_model"]], dtype=torch.float64)
    # Least-squares error is about noise / sqrt(n) per coefficient (times the feature scale).
    assert (coef - truth).abs().max() < 10 * noise / n**0.5 * (3 if normalize == "minmax" else 1)
    residual = (
        data.train[1][:, 0].double()
        - torch.cat([data.train[0], torch.ones(1400, 1)], 1).double() @ truth
    )
    assert residual.std() == pytest.approx(noise, rel=0.1)


def test_standard_truth_relates_to_raw_weights():
    data = synthetic_linear(config(num_samples=500, num_features=3))
    scale, shift = data.preprocessor.scale, data.preprocessor.shift
    w, b = data.truth["w"], data.truth["b"]
    assert data.truth["w_model"] == pytest.approx(
        [wi * si for wi, si in zip(w, scale, strict=True)]
    )
    assert data.truth["b_model"] == pytest.approx(
        b + sum(wi * hi for wi, hi in zip(w, shift, strict=True))
    )


def test_seeded():
    a, b = synthetic_linear(config(split_seed=1)), synthetic_linear(config(split_seed=1))
    assert torch.equal(a.train[0], b.train[0]) and a.truth == b.truth
    c = synthetic_linear(config(split_seed=2))
    assert a.truth["w"] != c.truth["w"]


def test_kfold_updates_model_space_truth():
    data = synthetic_linear(config(num_samples=300, noise=0.0))
    f = kfold(data, k=3, fold=0, seed=0)
    coef = lstsq(*f.train)
    truth = torch.tensor(f.truth["w_model"] + [f.truth["b_model"]], dtype=torch.float64)
    assert torch.allclose(coef, truth, atol=1e-4)
