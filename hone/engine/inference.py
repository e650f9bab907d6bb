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
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from hone.config import Config, load_config
from hone.data import Preprocessor
from hone.data.base import Tokenizer
from hone.engine.backends import BACKENDS, Backend, BuiltModel, load_on_meta, recorded_converters
from hone.engine.completion import Completion, TextStream, first_stop, shown_length
from hone.engine.manifest import verify_manifest
from hone.engine.precision import Precision, inference_precision
from hone.engine.tasks import TASKS, Task, evaluate
from hone.errors import ConfigError
from hone.metrics import METRICS
from hone.models import ModelSpec, build_model
from hone.models.converters import convert_model
from hone.run_files import RunFiles

if TYPE_CHECKING:
    from hone.engine.trainer import Trainer


def run_files(run: str | Path) -> RunFiles:
    """The files of a finished run, or a ConfigError saying what is missing. A Hugging Face
    checkpoint (a folder with its config.json, or `hf:ORG/NAME`) is a run too: the one
    hone.pretrained.view makes of it, so every command that loads a run takes one."""
    from hone.pretrained.view import checkpoint_view, is_checkpoint

    if is_checkpoint(run):
        run = checkpoint_view(run)
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


def spec_from_info(info: dict[str, Any], cfg: Config) -> ModelSpec:
    """The spec a run trained with, from its data.json and config."""
    return TASKS.get(info["task"]).spec_from_info(info, cfg.model.context_length)


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
        backend: Backend | None = None,
    ) -> None:
        self.cfg, self.task, self.spec, self.model = cfg, task, spec, model
        self.precision, self.device = precision, precision.device
        self.backend = backend or BACKENDS.get("torch")  # what runs the model
        self.tokenizer, self.preprocessor = tokenizer, preprocessor or Preprocessor()
        self.info, self.files = info or {}, files
        self.feature_names: list[str] = self.info.get("feature_names") or []
        self.class_labels: list[Any] = self.info.get("class_labels") or []

    @classmethod
    def load(
        cls,
        run: str | Path,
        device: str = "auto",
        data: Sequence[str] = (),
        backend: str = "auto",
    ) -> LoadedRun:
        """Load a finished run directory or an exported bundle onto `device` ('auto', 'cpu',
        'cuda', 'cuda:N'), to run on `backend` (hone.engine.backends: 'auto', 'torch',
        'onnx'); `data`: `data.*` overrides naming the data to use it on (a run trained on
        data handed in from Python keeps none)."""
        chosen = BACKENDS.get(backend)  # an unknown name fails first, listing the known ones
        files = run_files(run)
        if files.manifest.is_file():  # a bundle: refuse files changed since the export
            verify_manifest(files.root)
        cfg = load_config(str(files.config), data_overrides(data))
        info = json.loads(files.data_info.read_text())
        task = TASKS.get(info["task"])
        spec = task.spec_from_info(info, cfg.model.context_length)
        converters = recorded_converters(files)
        chosen = chosen.choose(converters)
        chosen.check(files, converters)  # e.g. a missing graph, before building anything
        mapped = None
        if not converters and chosen.name == "torch":
            from hone.pretrained.view import is_checkpoint

            mapped = load_on_meta(cfg, spec, files, device, read_only=is_checkpoint(run))
        if mapped is not None:
            model, dev, precision = mapped
        else:
            # The architecture first, the recorded converters re-applied, then the weights.
            model, _ = convert_model(build_model(cfg.model, spec), converters)
            context = task.context_length(spec)
            built = BuiltModel(files, model, converters, cfg.train.precision, context)
            model, dev, precision = chosen.load(built, device)
        model.eval()
        tokenizer, preprocessor = task.input_readers(files, info)
        return cls(
            cfg, task, spec, model, inference_precision(precision, dev), tokenizer,
            preprocessor, info, files, chosen,
        )  # fmt: skip

    @classmethod
    def from_trainer(cls, trainer: Trainer) -> LoadedRun:
        """The model a trainer holds, used exactly as a loaded run would be."""
        data = trainer.data
        return cls(
            trainer.cfg,
            trainer.task,
            trainer.spec,
            trainer.model,
            trainer.precision,
            getattr(data, "tokenizer", None),
            getattr(data, "preprocessor", None),
            trainer.task.info(data, trainer.spec),
            trainer.files,
        )

    # ----------------------------------------------------------------- using it
    def evaluate(self, split: str = "val", data: Any = None) -> dict[str, float]:
        """Loss and metric on `split` of the run's data, as the trainer evaluates it; or on
        `data` when given: `(x, y)` arrays or tensors, or an iterable of `(x, y)` or dict
        batches (a DataLoader). Inputs are raw, as `predict` takes them; targets are class
        indices for classification."""
        from hone.data import build_data

        t, task = self.cfg.train, self.task
        batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
        if data is not None:
            batches = self._batches(data)
        else:
            if split not in task.splits:
                raise ConfigError(
                    f"--split must be one of {', '.join(task.splits)} for a {task.name} run, got {split!r}"
                )
            held = build_data(self.cfg)
            if not task.has_split(held, split):
                raise ConfigError(f"the {split} split of this run is empty; choose another --split")
            batches = task.eval_batches(
                held, split, task.eval_batch_size(t), task.context_length(self.spec), t.eval_batches
            )
        loss_fn = task.loss(self.cfg.loss)
        # The run's own metrics (train.metrics) where this process has them registered.
        extra = {n: METRICS[n] for n in t.metrics if n in METRICS and METRICS[n].fn is not None}
        model_loss = self.task.model_loss(self.model, self.cfg.loss)  # no logits, if it can
        return evaluate(
            self.model, batches, loss_fn, self.task, self.device, self.precision.autocast, extra,
            model_loss,
        )  # fmt: skip

    def _batches(self, data: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of data handed to `evaluate`, read as training reads the same kind of
        data (hone.data.loaders), then preprocessed and shaped as `predict` does."""
        from hone.data.loaders import arrays_data, batch_splitter, is_arrays

        task, d = self.task, self.cfg.data
        if is_arrays(data):  # the rule hone.Trainer reads its data by
            x, y = arrays_data(tuple(data), None, None, task.name).train  # type: ignore[arg-type]
            size = task.eval_batch_size(self.cfg.train)
            pairs: Iterable[Any] = (
                (x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)
            )
        else:
            # The keys of the `python` data set; a run trained on another reads common names.
            keys = (getattr(d, "input_column", ""), getattr(d, "target_column", ""))
            split = batch_splitter(task.name, *keys)
            pairs = (split(batch) for batch in data)
        for x, y in pairs:
            yield self._inputs(x), y

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Raw inputs (N, *input_shape) or flat rows (N, features) as the model takes them."""
        if not x.is_floating_point():  # token ids, or integer inputs a model embeds
            return x
        shape = self.spec.input_shape
        if x.ndim < 2 or math.prod(x.shape[1:]) != math.prod(shape):
            raise ConfigError(
                f"inputs of shape {list(x.shape)} do not fit the model, which takes "
                f"{list(shape)} per sample (or {math.prod(shape)} values a row)"
            )
        return self.preprocessor(x.float()).reshape(len(x), *shape)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict[str, Any]:
        """Raw feature rows (N, features) to {"predictions": [...], "probabilities": [...]}:
        preprocessed as in training, class indices mapped back to the original labels."""
        if self.task.generates_text:
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
        result["predictions"] = self.task.to_labels(
            result["predictions"].tolist(), self.class_labels
        )
        if "probabilities" in result:
            result["probabilities"] = result["probabilities"].tolist()
        return result

    def training_sample(self, num_tokens: int, prompt: str = "\n", seed: int = 0) -> str:
        """The short sample a run writes while training (temperature 1, top-k 50); a prompt
        the corpus cannot encode starts from its first token instead."""
        assert self.tokenizer is not None
        if not self.tokenizer.encode(prompt):  # a corpus without that character
            prompt = self.tokenizer.decode([0])
        return self.sample(prompt, num_tokens, 1.0, 50, seed)

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
        prompt: str | Sequence[int],
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
        top_p: float | None = None,
        stop: Sequence[str] | None = None,
    ) -> Completion:
        """The completion of `prompt` (text or ids): its text, why it ended, the tokens it took."""
        stream = self.stream(prompt, max_new_tokens, temperature, top_k, seed, top_p, stop)
        for _ in stream:
            pass
        assert stream.completion is not None
        return stream.completion

    def stream(
        self,
        prompt: str | Sequence[int],
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
        top_p: float | None = None,
        stop: Sequence[str] | None = None,
    ) -> TextStream:
        """The completion's text in pieces, each as soon as it is known for good; `prompt` is
        text, or token ids (a chat template's: hone.engine.chat).

        Sampling as in hone.models.generate.sample_next (temperature 0: greedy; `top_k`,
        `top_p` cut the candidates), with a generator seeded by `seed`. Generation ends after
        `max_new_tokens` tokens, once the model draws an end-of-text id (the tokenizer's
        `eos_ids`, a pretrained checkpoint's), or once the text contains one of the `stop`
        strings; the text then ends just before it.
        """
        if self.tokenizer is None:
            raise ConfigError("this run is not a language model; use `hone predict` or `hone eval`")
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
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
        # A pretrained checkpoint's tokenizer names the ids that end a text; hone's own do not.
        eos_ids = set(getattr(self.tokenizer, "eos_ids", ()))
        steps = iter_tokens(self.model, idx, max_new_tokens, temperature, top_k, top_p, g, eos_ids)
        with closing(steps):
            while True:
                # Autocast around the model only: the caller's code runs between pieces.
                with self.precision.autocast():
                    token = next(steps, None)
                if token is None:
                    break
                tokens.append(token)
                if token in eos_ids:  # counted as generated; its text (a special token) not shown
                    finish_reason = "stop"
                    break
                # The whole text again, not the new token alone: a token may be part of a
                # character, and some tokenizers join tokens (IdTokenizer puts spaces between).
                text = self.tokenizer.decode(tokens)
                cut = first_stop(text, stop)
                if cut is not None:
                    assert cut >= shown, (text, shown)  # shown_length held it back
                    text, finish_reason = text[:cut], "stop"
                    break
                end = shown_length(text, stop)
                if end > shown:
                    yield text[shown:end]
                    shown = end
        if len(text) > shown:  # the tail held back, now final
            yield text[shown:]
        return Completion(text, finish_reason, len(ids), len(tokens))


def load_run(
    path: str | Path, device: str = "auto", backend: str = "auto", data: Sequence[str] = ()
) -> LoadedRun:
    """A finished run (or an exported bundle) ready to use: `.model`, `.predict(x)`,
    `.evaluate(split or data=...)`, `.sample(prompt, ...)`.

    `backend` (hone.engine.backends): "torch", "onnx" to run the graph that `hone export RUN
    --format onnx` wrote (on the CPU, through ONNX Runtime), or "auto", the run's own (an
    int8 run quantized for ONNX Runtime runs there). `data`: `data.*` overrides naming the
    data that `.evaluate(split)` reads, e.g. ["data.name=npz", "data.path=val.npz"].
    """
    return LoadedRun.load(path, device, data, backend)


def data_overrides(overrides: Sequence[str]) -> list[str]:
    """`overrides` when each sets a `data.*` key (the data to use a run on); the rest of a
    run's config is what it trained with, and anything else is refused."""
    for item in overrides:
        if not item.startswith("data."):
            raise ConfigError(
                f"a finished run takes only --data.* overrides (the data to use it on), got "
                f"--{item}; the run's own config is used for the rest"
            )
    return list(overrides)


def evaluate_run(
    run: str | Path,
    split: str = "val",
    device: str = "auto",
    data: Sequence[str] = (),
    backend: str = "auto",
) -> dict[str, Any]:
    """Metrics of a finished run on `split` (of the data that the `data.*` overrides `data`
    name, if any), its model run on `backend`; also written to RUN/eval-<split>.json."""
    loaded = LoadedRun.load(run, device, data, backend)
    result = {"split": split, **loaded.evaluate(split)}
    assert loaded.files is not None
    loaded.files.eval_result(split).write_text(json.dumps(result, indent=2) + "\n")
    return result
