"""`--distill STUDENT_CONFIG [--temperature T] [--alpha A]`: a smaller model trained on the
teacher's soft targets.

The teacher is the source run's model, frozen. The student is built and trained from its
own config (a recipe or TOML, with the command line's overrides) by hone's Trainer, on the
teacher's data: its `[data]` section is the teacher's, so it reads the same rows or the same
tokens. The Trainer is handed the teacher and `hone.losses.distillation_loss`: A x T^2 x the
KL divergence from the teacher's to the student's distribution at temperature T, plus
(1 - A) x the config's own loss on the labels. Validation measures the config's loss alone,
so the student's val_loss compares with any run's.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from hone.compress.base import Compressed, CompressionMethod, refuse_int8
from hone.compress.measure import validation_inputs
from hone.compress.training import last_validation, train_into
from hone.config import Config, load_config
from hone.data import TokenData, build_data
from hone.data.base import Data
from hone.engine.inference import LoadedRun
from hone.errors import ConfigError
from hone.losses import distillation_loss
from hone.models import build_model, num_parameters
from hone.run_files import RunFiles

DEFAULT_TEMPERATURE = 2.0
DEFAULT_ALPHA = 0.5
TOKENS_CHECKED = 1024  # validation tokens the teacher's tokenizer must reproduce


class Distill(CompressionMethod):
    """Knowledge distillation of the source run into a student built from `student`."""

    name = "distill"
    suffix = "distilled"

    def __init__(
        self,
        student: str,
        overrides: list[str] | tuple[str, ...] = (),
        temperature: float = DEFAULT_TEMPERATURE,
        alpha: float = DEFAULT_ALPHA,
    ) -> None:
        if not temperature > 0:
            raise ConfigError(f"--temperature must be above 0, got {temperature:g}")
        if not 0 <= alpha <= 1:
            raise ConfigError(
                f"--alpha (the weight of the teacher's soft targets) must be between 0 and 1, "
                f"got {alpha:g}"
            )
        self.student, self.temperature, self.alpha = student, temperature, alpha
        self.cfg: Config = load_config(student, list(overrides))
        self.data: Data | None = None

    def check(self, source: LoadedRun) -> None:
        refuse_int8(source)
        # The teacher's data, so that the student reads what the teacher was trained on.
        self.cfg.data = copy.deepcopy(source.cfg.data)
        self.data = build_data(source.cfg)
        if isinstance(self.data, TokenData):
            _check_tokenizer(source, self.data)
        # As the Trainer builds it; a model without a context length (an MLP) meets the
        # teacher's, so that building it says why it cannot read tokens.
        context = self.cfg.model.context_length or source.spec.input_shape[0]
        spec = source.task.spec(self.data, context)
        x = validation_inputs(source, 1)
        if source.task.context_length(spec):  # windows of tokens: the student's may be shorter
            teacher_context = x.shape[1]
            if spec.input_shape[0] > teacher_context:
                raise ConfigError(
                    f"the student's windows of {spec.input_shape[0]} tokens are longer than the "
                    f"teacher's {teacher_context}, and the teacher reads the student's windows; "
                    f"set --model.block_size={teacher_context} or less"
                )
            x = x[:, : spec.input_shape[0]]
        with torch.no_grad():
            taught = source.model(x).shape
            learns = build_model(self.cfg.model, spec)(x).shape  # a ConfigError if it cannot
        if taught != learns:
            fix = (
                f"set --model.vocab_size={taught[-1]}"
                if source.task.generates_text  # its outputs are the vocabulary
                else "give the student the teacher's outputs"
            )
            raise ConfigError(
                f"the student's outputs {tuple(learns)} differ from the teacher's "
                f"{tuple(taught)}, so it cannot learn its soft targets; {fix}"
            )

    def apply(self, source: LoadedRun, out: RunFiles) -> Compressed:
        assert self.data is not None, "apply() after check()"
        # The teacher's converters and weights are not the student's; the Trainer writes its own.
        out.converters.unlink(missing_ok=True)
        loss = distillation_loss(source.task.loss(self.cfg.loss), self.temperature, self.alpha)
        teacher = copy.deepcopy(source.model)  # the trainer moves and freezes it
        trainer = train_into(self.cfg, out, data=self.data, loss=loss, teacher=teacher)
        student = num_parameters(trainer.model)
        teacher_size = num_parameters(source.model)
        details: dict[str, Any] = {
            "student": self.student,
            "student_model": {"name": self.cfg.model.name, "parameters": student},
            "teacher_parameters": teacher_size,
            "temperature": self.temperature,
            "alpha": self.alpha,
            "loss": f"{self.alpha:g} x T^2 x KL(teacher || student at T={self.temperature:g}) "
            f"+ {1 - self.alpha:g} x {self.cfg.loss.name}",
            "steps": trainer.state.step,
            **last_validation(trainer),
        }
        summary = (
            f"distilled into a {self.cfg.model.name} of {student:,} parameters "
            f"({teacher_size / student:.2f}x fewer than the teacher's {teacher_size:,}), "
            f"{trainer.state.step} steps at T={self.temperature:g}, alpha={self.alpha:g}"
        )
        return Compressed(out.model, summary, details)


def _check_tokenizer(source: LoadedRun, data: TokenData) -> None:
    """The teacher's saved tokenizer must encode its validation text to the data's tokens:
    otherwise the teacher's soft targets would be for other symbols than the student's."""
    assert source.tokenizer is not None
    ids = [int(t) for t in data.val[:TOKENS_CHECKED]]
    if source.tokenizer.encode(data.tokenizer.decode(ids)) != ids:
        raise ConfigError(
            f"the tokenizer saved in {source.files.root if source.files else 'the run'} does "
            f"not give the tokens of its data set ({source.cfg.data.name}) any more, so the "
            "student cannot read the teacher's tokens; retrain the teacher on the data as it is"
        )
