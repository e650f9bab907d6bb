"""Data sets by name: classic in-memory data, language-model token streams, user data.

Token examples of their own lengths (`ExampleData`: instruction and chat data) come from
hone.finetune.chat_data, registered as `chat` when the config first looks data sets up."""

from __future__ import annotations

from hone.config import Config
from hone.data import (  # noqa: F401  (register)
    custom,
    digits,
    from_python,
    idx,
    synthetic,
    tabular,
    text,
)
from hone.data.base import DATASETS, Data, ExampleData, Preprocessor, TensorData, TokenData
from hone.data.batching import ExampleBatcher, FullBatcher, TensorBatcher, WindowBatcher


def build_data(cfg: Config) -> Data:
    """Load, split and preprocess the data set named by `data.name`."""
    return DATASETS.get(cfg.data.name)(cfg)


__all__ = [
    "DATASETS",
    "Data",
    "ExampleBatcher",
    "ExampleData",
    "FullBatcher",
    "Preprocessor",
    "TensorBatcher",
    "TensorData",
    "TokenData",
    "WindowBatcher",
    "build_data",
]
