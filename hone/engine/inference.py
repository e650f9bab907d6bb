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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hone.config import Config, load_config
from hone.data import Preprocessor
from hone.data.base import Tokenizer
from hone.engine.int8 import load_int8
from hone.engine.manifest import verify_manifest
from hone.engine.parts import context_length
from hone.engine.precision import Precision
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
    """The precision a run trained in, on `device`; fp16 (CUDA only) runs in fp32 elsewhere."""
    return Precision("fp32" if name == "fp16" and device.type != "cuda" else name, device)


def spec_from_info(info: dict[str, Any], cfg: Config) -> ModelSpec:
    if info["task"] == "lm":
        # Runs written before data.json recorded the context length took it from the GPT's.
        context = info.get("context_length") or cfg.model.context_length
        return ModelSpec("lm", (context,), info["vocab_size"], vocab_size=info["vocab_size"])
    return ModelSpec(info["task"], tuple(info["input_shape"]), info["num_outputs"])


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

    @torch.no_grad()
    def sample(
        self,
        prompt: str,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
    ) -> str:
        """`max_new_tokens` tokens sampled after `prompt` (the prompt not included);
        reproducible given `seed`."""
        from hone.models.generate import generate

        if self.tokenizer is None:
            raise ConfigError("this run is not a language model; use `hone predict` or `hone eval`")
        ids = self.tokenizer.encode(prompt)
        if not ids:
            raise ConfigError("--prompt encodes to no tokens; give at least one character")
        g = torch.Generator(device=self.device)
        g.manual_seed(seed)
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)
        with self.precision.autocast():
            out = generate(
                self.model, idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=g
            )
        return self.tokenizer.decode(out[0, len(ids) :].tolist())


def evaluate_run(run: str | Path, split: str = "val", device: str = "auto") -> dict[str, Any]:
    """Metrics of a finished run on `split`; also written to RUN/eval-<split>.json."""
    loaded = LoadedRun.load(run, device)
    result = {"split": split, **loaded.evaluate(split)}
    assert loaded.files is not None
    loaded.files.eval_result(split).write_text(json.dumps(result, indent=2) + "\n")
    return result
