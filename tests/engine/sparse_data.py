"""A user data set for the tests: 10 features of which only the first two matter."""

import torch


def make(num_samples: int = 600):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(num_samples, 10, generator=g)
    y = 2.0 * x[:, :1] - 1.5 * x[:, 1:2] + 0.05 * torch.randn(num_samples, 1, generator=g)
    return x, y
