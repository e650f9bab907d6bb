"""What every data set hands to the engine.

Three shapes of data: `TensorData` (supervised samples held in memory: tables, images),
`TokenData` (a token stream for language models, read through numpy memmap) and
`ExampleData` (token examples of their own lengths: instruction and chat data). Data set
builders are registered by name in `DATASETS` and take the whole `Config`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from hone.config import Config
from hone.registry import Registry

TASKS = ("regression", "classification", "binary")


@dataclass
class Preprocessor:
    """Feature scaling fitted on the training split; JSON-serializable for predict/eval."""

    kind: str = "none"  # none | standard | minmax
    shift: list[float] = field(default_factory=list)  # subtracted from each feature
    scale: list[float] = field(default_factory=list)  # then divided by this

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return x
        shape = x.shape
        flat = x.flatten(1)
        shift = torch.tensor(self.shift, dtype=x.dtype)
        scale = torch.tensor(self.scale, dtype=x.dtype)
        return ((flat - shift) / scale).reshape(shape)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "shift": self.shift, "scale": self.scale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kind, self.shift, self.scale = (
            state["kind"],
            list(state["shift"]),
            list(state["scale"]),
        )


@dataclass
class TensorData:
    """Supervised data split into train/val/test, already preprocessed.

    x tensors are float32 of shape (N, *input_shape). y is int64 class indices (N,) for
    classification, float32 (N,) of 0/1 for binary, float32 (N, num_outputs) for regression.
    """

    task: str
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    input_shape: tuple[int, ...]
    num_outputs: int  # classes for classification, 1 for binary, target width for regression
    preprocessor: Preprocessor = field(default_factory=Preprocessor)
    feature_names: list[str] = field(default_factory=list)
    # classification/binary: the original label of each class index (JSON-friendly), for predict.
    class_labels: list[Any] = field(default_factory=list)
    # Training-time augmentation: (x batch, generator) -> x batch; None when off.
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    # Ground truth of synthetic data (e.g. generating weights), for checks and reports.
    truth: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.task in TASKS, self.task


class Tokenizer(Protocol):
    """A tokenizer saved beside a run so that sampling uses exactly the same one."""

    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def save(self, folder: str) -> None: ...


@dataclass
class TokenData:
    """A language-modelling token stream split contiguously into train and validation."""

    train: np.ndarray  # 1-D integer tokens (often a np.memmap)
    val: np.ndarray
    tokenizer: Tokenizer
    vocab_size: int
    task: str = "lm"
    description: str = ""


@dataclass
class ExampleData:
    """Token examples of their own lengths for a language model: instructions, conversations
    (hone.finetune.chat_data). Batches pad them to the longest of the batch
    (hone.data.batching.ExampleBatcher) instead of cutting windows from a stream.

    A row is an integer array (3, L), L <= context_length: input ids, target ids (-100 where
    no loss is taken: prompts, padding) and positions (0 .. at the start of each example).
    `packed_train`, when data.pack is on, holds the training examples several to a row, their
    positions restarting at each one; evaluation always reads the unpacked rows.
    """

    train: list[np.ndarray]
    val: list[np.ndarray]
    tokenizer: Tokenizer
    vocab_size: int
    context_length: int
    pad_id: int = 0  # the input id of padding (its targets are -100)
    packed_train: list[np.ndarray] = field(default_factory=list)
    task: str = "lm"
    description: str = ""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.context_length,)


Data = TensorData | TokenData | ExampleData

DATASETS: Registry[Callable[[Config], Data]] = Registry("data set", "data.name")
