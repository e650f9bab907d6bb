"""One way to load a run: `LoadedRun` holds a trained model with all it needs to be used.

The config, the task and spec, the model (its architecture rebuilt from the config and the
recorded converters, its weights from safetensors: nothing unpickled), the preprocessing or
the tokenizer, the precision and the post-processing are loaded once. `hone eval`,
`hone predict`, `hone sample` and the trainer's own samples all go through it; export,
serve and report build on it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from hone.config import Config, load_config
from hone.data import Preprocessor
from hone.data.base import Tokenizer
from hone.engine.int8 import load_int8
from hone.engine.manifest import verify_manifest
from hone.engine.parts import context_length
from hone.engine.precision import Precision, resolve_precision
from hone.engine.runtime import resolve_device
from hone.engine.tasks import TASKS, Task, evaluate
from hone.errors import ConfigError
from hone.losses import build_loss
from hone.models import ModelSpec, build_model
from hone.models.converters import apply_converters
from hone.run_files import RunFiles

if TYPE_CHECKING:
    from hone.engine.trainer import Trainer


def run_files(run: str | Path) -> RunFiles:
    """The files of a finished run, or a ConfigError saying what is missing."""
    files = RunFiles(run)
    if not files.config.is_file():
        raise ConfigError(
            f"{run} is not a hone run directory (no {files.config.name}); pass a folder made by `hone train`"
        )
    if not files.model.is_file():
        raise ConfigError(
            f"{run} has no {files.model.name}: the run did not finish; resume it with `hone train --resume {run}`"
        )
    return files


def inference_precision(name: str, device: torch.device) -> Precision:
    """The precision a run trained in, on `device` ('auto' resolved for this device, as the
    trainer does); fp16 (CUDA only) runs in fp32 elsewhere."""
    name, reason = resolve_precision(name, device)
    if name == "fp16" and device.type != "cuda":
        return Precision("fp32", device, f"trained in fp16, which needs CUDA: fp32 on {device}")
    return Precision(name, device, reason)


def spec_from_info(info: dict[str, Any], cfg: Config) -> ModelSpec:
    if info["task"] == "lm":
        # Runs written before data.json recorded the context length took it from the GPT's.
        context = info.get("context_length") or cfg.model.context_length
        return ModelSpec("lm", (context,), info["vocab_size"], vocab_size=info["vocab_size"])
    return ModelSpec(info["task"], tuple(info["input_shape"]), info["num_outputs"])


@dataclass
class Completion:
    """What a language model wrote after a prompt, and why it ended (the fields a server's
    response needs: OpenAI's `finish_reason` and `usage`)."""

    text: str  # the generated text, without the prompt and without the stop string
    finish_reason: Literal["stop", "length"]  # a stop string appeared, or max_new_tokens ran out
    prompt_tokens: int
    completion_tokens: int  # every token generated, those of the stop string included


class TextStream(Iterator[str]):
    """The pieces of a completion's text as it is generated: their concatenation is the text
    that `LoadedRun.complete` returns for the same arguments. `completion` is set once the
    iteration ends; `close()` stops generating early."""

    def __init__(self, pieces: Generator[str, None, Completion]) -> None:
        self._pieces = pieces
        self.completion: Completion | None = None

    def __next__(self) -> str:
        try:
            return next(self._pieces)
        except StopIteration as end:
            self.completion = end.value
            raise

    def close(self) -> None:
        self._pieces.close()


def _first_stop(text: str, stop: Sequence[str]) -> int | None:
    """Where the earliest stop string in `text` begins, or None."""
    found = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(found) if found else None


def _shown_length(text: str, stop: Sequence[str]) -> int:
    """How much of the text decoded so far can be shown for good.

    Held back: a trailing U+FFFD, which a byte or BPE tokenizer decodes while a multi-byte
    character's bytes are still arriving, and then the longest tail that begins a stop string
    (the complete text would end before it). Text before that never changes, so no stop
    string can begin in it later.
    """
    end = len(text.rstrip("\ufffd"))
    held = 0  # the longest tail text[end - k : end] that is the first k characters of a stop
    for s in stop:
        for k in range(min(len(s) - 1, end), held, -1):
            if text.endswith(s[:k], 0, end):
                held = k
                break
    return end - held


class LoadedRun:
    """A trained model ready to evaluate, predict or sample with."""

    def __init__(
        self,
        cfg: Config,
        task: Task,
        spec: ModelSpec,
        model: nn.Module,
        precision: Precision,
        tokenizer: Tokenizer | None = None,
        preprocessor: Preprocessor | None = None,
        info: dict[str, Any] | None = None,
        files: RunFiles | None = None,
    ) -> None:
        self.cfg, self.task, self.spec, self.model = cfg, task, spec, model
        self.precision, self.device = precision, precision.device
        self.tokenizer, self.preprocessor = tokenizer, preprocessor or Preprocessor()
        self.info, self.files = info or {}, files
        self.feature_names: list[str] = self.info.get("feature_names") or []
        self.class_labels: list[Any] = self.info.get("class_labels") or []

    @classmethod
    def load(cls, run: str | Path, device: str = "auto") -> LoadedRun:
        """Load a finished run directory or an exported bundle onto `device` ('auto', 'cpu',
        'cuda', 'cuda:N')."""
        from safetensors.torch import load_model

        files = run_files(run)
        if files.manifest.is_file():  # a bundle: refuse files changed since the export
            verify_manifest(files.root)
        cfg = load_config(str(files.config))
        info = json.loads(files.data_info.read_text())
        dev = resolve_device(device)
        spec = spec_from_info(info, cfg)
        model = build_model(cfg.model, spec)
        if files.converters.is_file():
            model = apply_converters(model, json.loads(files.converters.read_text())["converters"])
        int8 = load_int8(files, model, context_length(spec) if spec.task == "lm" else None)
        if int8 is not None:  # `hone compress --quantize int8` wrote it: it runs on the CPU
            if dev.type != "cpu" and device != "auto":
                raise ConfigError(
                    f"{run} holds an int8 model, which runs on the CPU; pass --device cpu"
                )
            model, dev = int8, torch.device("cpu")
        else:
            model = model.to(dev)
            load_model(model, str(files.model), device=str(dev))
        model.eval()
        tokenizer = preprocessor = None
        if spec.task == "lm":
            from hone.data.text.tokenizers import load_tokenizer

            tokenizer = load_tokenizer(str(files.tokenizer))
        else:
            preprocessor = Preprocessor()
            preprocessor.load_state_dict(info["preprocessor"])
        precision = inference_precision("fp32" if int8 is not None else cfg.train.precision, dev)
        return cls(
            cfg, TASKS[spec.task], spec, model, precision, tokenizer, preprocessor, info, files
        )

    @classmethod
    def from_trainer(cls, trainer: Trainer) -> LoadedRun:
        """The model a trainer holds, used exactly as a loaded run would be."""
        from hone.engine.parts import data_info

        data = trainer.data
        return cls(
            trainer.cfg,
            trainer.task,
            trainer.spec,
            trainer.model,
            trainer.precision,
            getattr(data, "tokenizer", None),
            getattr(data, "preprocessor", None),
            data_info(data, trainer.spec),
            trainer.files,
        )

    # ----------------------------------------------------------------- using it
    def evaluate(self, split: str = "val") -> dict[str, float]:
        """Loss and metric on `split` of the run's data, as the trainer evaluates it."""
        from hone.data import build_data

        if split not in self.task.splits:
            raise ConfigError(
                f"--split must be one of {', '.join(self.task.splits)} for a {self.task.name} run, got {split!r}"
            )
        data = build_data(self.cfg)
        if not self.task.has_split(data, split):
            raise ConfigError(f"the {split} split of this run is empty; choose another --split")
        t = self.cfg.train
        batch_size = t.batch_size if self.task.name == "lm" else t.eval_batch_size
        batches = self.task.eval_batches(
            data, split, batch_size, context_length(self.spec), t.eval_batches
        )
        loss_fn = build_loss(self.cfg.loss, self.task.name)
        return evaluate(
            self.model, batches, loss_fn, self.task, self.device, self.precision.autocast
        )

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict[str, Any]:
        """Raw feature rows (N, features) to {"predictions": [...], "probabilities": [...]}:
        preprocessed as in training, class indices mapped back to the original labels."""
        if self.task.name == "lm":
            raise ConfigError("a language model has no predict; use `hone sample` on it")
        expected = math.prod(self.spec.input_shape)
        if x.ndim != 2 or x.shape[1] != expected:
            raise ConfigError(
                f"inputs have {x.shape[-1] if x.ndim else 0} features per row, the model expects {expected}"
            )
        x = self.preprocessor(x.float()).reshape(len(x), *self.spec.input_shape)
        with self.precision.autocast():
            out = self.model(x.to(self.device))
        result: dict[str, Any] = {k: v.cpu() for k, v in self.task.postprocess(out.float()).items()}
        predictions = result["predictions"].tolist()
        if self.class_labels and self.task.name == "classification":
            predictions = [self.class_labels[i] for i in predictions]
        result["predictions"] = predictions
        if "probabilities" in result:
            result["probabilities"] = result["probabilities"].tolist()
        return result

    def sample(
        self,
        prompt: str,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
        top_p: float | None = None,
        stop: Sequence[str] | None = None,
    ) -> str:
        """The text of `complete(...)`: up to `max_new_tokens` tokens sampled after `prompt`
        (the prompt not included); reproducible given `seed`."""
        return self.complete(prompt, max_new_tokens, temperature, top_k, seed, top_p, stop).text

    def complete(
        self,
        prompt: str,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
        top_p: float | None = None,
        stop: Sequence[str] | None = None,
    ) -> Completion:
        """The completion of `prompt`: its text, why it ended and the tokens it took."""
        stream = self.stream(prompt, max_new_tokens, temperature, top_k, seed, top_p, stop)
        for _ in stream:
            pass
        assert stream.completion is not None
        return stream.completion

    def stream(
        self,
        prompt: str,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
        top_p: float | None = None,
        stop: Sequence[str] | None = None,
    ) -> TextStream:
        """The completion's text in pieces, each as soon as it is known for good.

        Sampling as in hone.models.generate.sample_next (temperature 0: greedy; `top_k`,
        `top_p` cut the candidates), with a generator seeded by `seed`. Generation ends after
        `max_new_tokens` tokens, or once the text contains one of the `stop` strings; the text
        then ends just before it.
        """
        if self.tokenizer is None:
            raise ConfigError("this run is not a language model; use `hone predict` or `hone eval`")
        ids = self.tokenizer.encode(prompt)
        if not ids:
            raise ConfigError("--prompt encodes to no tokens; give at least one character")
        if temperature < 0:
            raise ConfigError(f"temperature must be at least 0 (0: greedy), got {temperature}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1] (1 keeps every token), got {top_p}")
        stops = list(stop or [])
        if "" in stops:
            raise ConfigError(f"stop strings must not be empty, got {stops}")
        pieces = self._pieces(ids, max_new_tokens, temperature, top_k, seed, top_p, stops)
        return TextStream(pieces)

    def _pieces(
        self,
        ids: list[int],
        max_new_tokens: int,
        temperature: float,
        top_k: int | None,
        seed: int,
        top_p: float | None,
        stop: list[str],
    ) -> Generator[str, None, Completion]:
        """Yields the new text as tokens are drawn; returns the Completion."""
        from hone.models.generate import iter_tokens

        assert self.tokenizer is not None
        g = torch.Generator(device=self.device)
        g.manual_seed(seed)
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)
        tokens: list[int] = []
        text, shown = "", 0  # the text so far, and how much of it was yielded
        finish_reason: Literal["stop", "length"] = "length"
        steps = iter_tokens(self.model, idx, max_new_tokens, temperature, top_k, top_p, g)
        with closing(steps):
            while True:
                # Autocast around the model only: the caller's code runs between pieces.
                with self.precision.autocast():
                    token = next(steps, None)
                if token is None:
                    break
                tokens.append(token)
                # The whole text again, not the new token alone: a token may be part of a
                # character, and some tokenizers join tokens (IdTokenizer puts spaces between).
                text = self.tokenizer.decode(tokens)
                cut = _first_stop(text, stop)
                if cut is not None:
                    assert cut >= shown, (text, shown)  # _shown_length held it back
                    text, finish_reason = text[:cut], "stop"
                    break
                end = _shown_length(text, stop)
                if end > shown:
                    yield text[shown:end]
                    shown = end
        if len(text) > shown:  # the tail held back, now final
            yield text[shown:]
        return Completion(text, finish_reason, len(ids), len(tokens))


def evaluate_run(run: str | Path, split: str = "val", device: str = "auto") -> dict[str, Any]:
    """Metrics of a finished run on `split`; also written to RUN/eval-<split>.json."""
    loaded = LoadedRun.load(run, device)
    result = {"split": split, **loaded.evaluate(split)}
    assert loaded.files is not None
    loaded.files.eval_result(split).write_text(json.dumps(result, indent=2) + "\n")
    return result
