"""Models and data sets as a user's own code would define them, in an importable module."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset


class DigitsNet(nn.Module):
    """A small MLP for 8x8 digits."""

    def __init__(self, hidden: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.hidden, self.num_classes = hidden, num_classes
        self.body = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1))


class DictDigits(Dataset):
    """Map-style, each item a dict, as Hugging Face-style code writes them."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixels": self.x[i], "label": self.y[i]}


class StreamDigits(IterableDataset):
    """Iterable-style: samples in a fixed order, no length."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __iter__(self):
        return iter(zip(self.x, self.y, strict=True))


def digits(n: int = 1797) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return torch.tensor(x[:n] / 16, dtype=torch.float32), torch.tensor(y[:n])
