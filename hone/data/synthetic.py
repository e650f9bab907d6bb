"""`synthetic_linear`: y = w.x + b + noise with known w and b, to check that training recovers them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hone.config import Config, opt, register_data_config
from hone.data.base import DATASETS, TensorData
from hone.data.split import build_tensor_data, linear_truth


@register_data_config("synthetic_linear")
@dataclass
class SyntheticLinearConfig:
    num_samples: int = opt(1000, "number of samples", ge=2)
    num_features: int = opt(5, "number of features", ge=1)
    noise: float = opt(0.1, "std of the label noise", ge=0)


@DATASETS.register("synthetic_linear")
def synthetic_linear(cfg: Config) -> TensorData:
    """x ~ N(0, 1) of shape (data.num_samples, data.num_features); w, b ~ N(0, 1).

    One generator seeded by data.split_seed draws w, b, x and the noise (std data.noise), in
    that order, and the split uses the same seed: one number names the whole data set.
    `truth` holds w and b, and w_model, b_model: the same line in the scaled feature space
    the model sees, which a linear model trained on this data should converge to.
    """
    data = cfg.data
    g = torch.Generator().manual_seed(data.split_seed)
    w = torch.randn(data.num_features, generator=g, dtype=torch.float64)
    b = torch.randn((), generator=g, dtype=torch.float64)
    x = torch.randn(data.num_samples, data.num_features, generator=g, dtype=torch.float64)
    noise = data.noise * torch.randn(data.num_samples, generator=g, dtype=torch.float64)
    y = (x @ w + b + noise).unsqueeze(1)  # (N, 1)
    out = build_tensor_data(
        x.float(),
        y.float(),
        "regression",
        1,
        data,
        feature_names=[f"x{i}" for i in range(data.num_features)],
        truth={"w": w.tolist(), "b": b.item(), "noise": data.noise},
    )
    out.truth["w_model"], out.truth["b_model"] = linear_truth(
        out.truth["w"], out.truth["b"], out.preprocessor
    )
    return out
