"""The language-model task: the next token of a token stream, judged by perplexity."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hone.config import LossConfig, TrainConfig, opt, register_train_part
from hone.data import Preprocessor, TensorData, TokenData, WindowBatcher
from hone.data.base import Data, ExampleData, Tokenizer
from hone.data.batching import IGNORE_INDEX, example_batches
from hone.engine.task_base import Batch, BatchSource, ModelLoss, Task
from hone.errors import ConfigError
from hone.models import ModelSpec
from hone.run_files import RunFiles

if TYPE_CHECKING:
    from hone.data.loaders import LoaderData
    from hone.distributed.strategy import Strategy

# The validation windows of a language model are drawn once with this seed, so that every
# evaluation of a run (and `hone eval` afterwards) sees the same tokens.
EVAL_WINDOW_SEED = 1234
WHOLE_SPLIT_TOKENS = 16384  # the least tokens in a batch of a whole-split evaluation


@register_train_part("sampling")
@dataclass
class SamplingConfig:
    """What a language model's run samples (the trainer draws it; a key of [train])."""

    sample_tokens: int = opt(200, "language models: tokens sampled at the end of training", ge=0)


class LanguageModel(Task):
    name, metric = "lm", "perplexity"
    splits = ("train", "val")
    # A corpus's epoch is long and its windows are drawn at random: evaluate every
    # train.eval_every steps only.
    evaluates_each_epoch = False
    generates_text = True
    data_unit = "tokens"
    input_name = "tokens"

    def spec(self, data: Data | LoaderData, context_length: int = 0) -> ModelSpec:
        assert not isinstance(data, TensorData), "a language model learns from tokens"
        if not isinstance(data, TokenData):  # a user's loader of windows: their length
            context_length = data.input_shape[0]
        if context_length < 1:
            raise ConfigError(
                "a language model needs a context length; set --model.block_size (gpt) or "
                "--model.context_length (custom models)"
            )
        vocab = data.vocab_size
        return ModelSpec(self.name, (context_length,), vocab, vocab_size=vocab)

    def info(self, data: Data | LoaderData, spec: ModelSpec) -> dict[str, Any]:
        return {
            "task": self.name,
            "vocab_size": spec.vocab_size,
            "context_length": self.context_length(spec),
        }

    def spec_from_info(self, info: dict[str, Any], context_length: int = 0) -> ModelSpec:
        # Runs written before data.json recorded the context length took it from the GPT's.
        context = info.get("context_length") or context_length
        vocab = info["vocab_size"]
        return ModelSpec(self.name, (context,), vocab, vocab_size=vocab)

    def save_input_files(self, data: Data | LoaderData, files: RunFiles) -> None:
        assert not isinstance(data, TensorData), "a language model learns from tokens"
        if data.tokenizer is not None:  # a user's loader of token ids comes without one
            data.tokenizer.save(str(files.tokenizer))

    def input_readers(
        self, files: RunFiles, info: dict[str, Any]
    ) -> tuple[Tokenizer | None, Preprocessor | None]:
        from hone.data.text.tokenizers import load_tokenizer

        if not files.tokenizer.exists():  # trained on a user's loader of token ids
            return None, None
        return load_tokenizer(str(files.tokenizer)), None

    def context_length(self, spec: ModelSpec) -> int:
        return spec.input_shape[0]

    def tokens_per_sample(self, spec: ModelSpec) -> int:
        return self.context_length(spec)

    def random_inputs(self, spec: ModelSpec, rows: int, generator: torch.Generator) -> torch.Tensor:
        shape = (rows, self.context_length(spec))
        return torch.randint(0, spec.vocab_size, shape, generator=generator)

    def samples(self, y: torch.Tensor) -> int:
        # per token that has a target: prompts and padding of examples count for nothing
        return int((y != IGNORE_INDEX).sum())

    def accumulation_weights(
        self, batches: list[Batch], strategy: Strategy | None = None
    ) -> torch.Tensor | None:
        """Each micro-batch's share of the step's loss, its share of the step's target tokens:
        the sum of the K weighted means is then the mean over every token of the step, as
        one batch K times larger gives (a plain 1/K would weigh a micro-batch of few answer
        tokens as much as one of many). Tensors, not numbers: nothing waits for a device.

        Under several processes the step's tokens are every rank's: the count is summed over
        ranks (one all-reduce of a number per step), and the shares are scaled by the world
        size W, which the ranks' averaging of gradients divides out again, so the gradient is
        the mean over every answer token of the global batch, as in one process."""
        if len(batches) == 1 and strategy is None:
            return None
        counts = torch.stack([(y != IGNORE_INDEX).sum() for _, y in batches])  # (K,)
        total = counts.sum()
        if strategy is None:
            return counts / total.clamp(min=1)
        return counts / (strategy.sum_over_ranks(total).clamp(min=1) / strategy.ctx.world_size)

    def eval_batch_size(self, train: TrainConfig) -> int:
        # Training-sized batches of windows: under several processes every rank then averages
        # as many tokens (see eval_batches); a whole-split evaluation enlarges them anyway.
        return train.batch_size

    def eval_batches(
        self,
        data: Data | LoaderData,
        split: str,
        batch_size: int,
        context_length: int = 0,
        num_batches: int = 0,
        rank: int = 0,
        world_size: int = 1,
        grad_accum: int = 1,
    ) -> Iterable[Batch]:
        """`num_batches` fixed batches of windows, or with `num_batches = 0` the whole split.
        Under several processes each rank takes its share in training-sized micro-batches
        (equal token counts: the mean of the ranks' means is exact); one process takes each
        batch whole. A loader's batches are taken as it draws them, `num_batches` of them."""
        if isinstance(data, BatchSource):
            return islice(data.batches(split), num_batches or None)
        if isinstance(data, ExampleData):  # every rank all rows: the mean of equal values
            rows = data.val if split == "val" else data.train
            return example_batches(
                rows, batch_size, data.pad_id, num_batches * batch_size, EVAL_WINDOW_SEED
            )
        assert isinstance(data, TokenData)
        tokens = data.val if split == "val" else data.train
        if num_batches == 0:
            return whole_split(tokens, context_length, batch_size, rank, world_size)
        if world_size == 1:
            grad_accum = 1
        batcher = WindowBatcher(
            tokens,
            context_length,
            batch_size,
            EVAL_WINDOW_SEED,
            rank,
            world_size,
            grad_accum,
        )

        def batches() -> Iterator[Batch]:
            for _ in range(num_batches):
                yield from batcher.next_step()

        return batches()

    def has_split(self, data: Data | LoaderData, split: str) -> bool:
        if isinstance(data, BatchSource):
            return data.has(split)
        if isinstance(data, ExampleData):
            return len(data.val if split == "val" else data.train) > 0
        return split in self.splits

    def model_loss(self, model: torch.nn.Module, cfg: LossConfig) -> ModelLoss | None:
        # hone's GPT and Llama take the targets and compute the cross-entropy a chunk of
        # tokens at a time (hone.models.lm_loss): the batch's (B, T, V) logits never exist,
        # 200 MB a step at batch 4 x 256 with a 49k vocabulary. A user's model keeps the
        # plain path.
        if cfg.name != "cross_entropy" or not getattr(model, "loss_from_targets", False):
            return None
        smoothing = cfg.label_smoothing

        def loss(
            forward: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor
        ) -> torch.Tensor:
            if x.dim() == 3:  # packed examples (B, 2, T): ids over positions (pad_rows)
                return forward(x[:, 0], targets=y, label_smoothing=smoothing, positions=x[:, 1])
            return forward(x, targets=y, label_smoothing=smoothing)

        return loss

    def update(self, state: Any, out: torch.Tensor, y: torch.Tensor) -> Any:
        return state

    def finish(self, state: Any, count: int, loss: float) -> float:
        return float(torch.tensor(loss).exp())

    def reduce_over_ranks(self, result: dict[str, float], strategy: Strategy) -> dict[str, float]:
        # Each rank evaluated its equal share of the windows: the mean of the means is exact.
        loss = strategy.mean_over_ranks(result["loss"])
        return {"loss": loss, self.metric: self.finish(None, 1, loss)}

    def postprocess(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"predictions": out.float().argmax(-1)}


def whole_split(
    tokens: Any, context_length: int, batch_size: int, rank: int = 0, world_size: int = 1
) -> Iterator[Batch]:
    """Every token of `tokens` after the first, predicted once: consecutive windows of
    `context_length` (the last one shorter), `batch_size` windows a batch, in order.

    The first token of each window is predicted from no context, as the first token of a
    training window is. Under several processes rank r takes windows r, r + W, ...; the
    windows are cut to a multiple of W (at most W - 1 windows left out) so that every rank
    averages as many tokens and the mean of the ranks' means stays exact.
    """
    # Forward passes only: batches of at least WHOLE_SPLIT_TOKENS tokens keep the matmuls
    # large (a training batch of 12 windows evaluated 111k characters 3x slower).
    batch_size = max(batch_size, WHOLE_SPLIT_TOKENS // context_length)
    usable = len(tokens) - 1  # inputs tokens[i], targets tokens[i + 1]
    starts = np.arange(0, usable, context_length)
    if world_size > 1:
        full = starts[starts + context_length <= usable]  # equal windows only
        starts = full[: len(full) // world_size * world_size][rank::world_size]
    full_starts = starts[starts + context_length <= usable]
    offsets = np.arange(context_length + 1)
    for first in range(0, len(full_starts), batch_size):
        chunk = full_starts[first : first + batch_size]
        windows = torch.from_numpy(np.asarray(tokens[chunk[:, None] + offsets], dtype=np.int64))
        yield windows[:, :-1], windows[:, 1:]
    if len(full_starts) < len(starts):  # the tail, shorter than a window
        tail = torch.from_numpy(np.asarray(tokens[starts[-1] :], dtype=np.int64))[None]
        yield tail[:, :-1], tail[:, 1:]
