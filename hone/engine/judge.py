"""Judging a fine-tuned run on held-out prompts: the loss on the answers, and greedy answers
scored against the references, for the model before fine-tuning and after.

    from hone.engine.judge import judge_run
    result = judge_run("runs/my-chat", generate=True)     # what `hone eval RUN --generate` shows
    result["models"]["after"]["exact_match"]              # 0.96: 48 of 50 answers exactly right

The held-out prompts are the records of `data.val_path` (any format chat data reads,
hone.finetune.chat_records): each conversation up to its last assistant turn is the prompt,
written as training wrote it (the chat template and its generation prompt, or the plain
prompt for a tokenizer without one), and that turn is the reference. Each model answers
greedily (temperature 0), up to its end-of-text token or `max_new_tokens`. An answer scores
*exact match* when it equals the reference (both stripped of surrounding whitespace), and
*contains* when the reference (stripped) occurs in it: a model that answers right but wordily.

"Before" is the checkpoint the run started from (`model.path` of a `model.name = "pretrained"`
run), loaded as any run is (LoadedRun): no adapters, no fine-tuned weights. A run trained
from scratch has no before. An application of the engine: it imports hone.engine, which the
rest of hone.finetune (data sets, the LoRA converter) does not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hone.config import Config
from hone.engine.chat import chat_prompt_ids
from hone.engine.inference import LoadedRun
from hone.engine.tasks import evaluate
from hone.errors import ConfigError
from hone.finetune.chat_records import conversation, plain_text, read_records, record_format

RESULT_FILE = "eval-generate.json"  # in the run folder


@dataclass
class HeldOut:
    """One held-out prompt: where it was read, its prompt ids, the reference answer."""

    where: str
    prompt_ids: list[int]
    reference: str


def check_judgeable(cfg: Config, name: str, generates_text: bool) -> None:
    """A one-line ConfigError unless the run `name` is a language model trained on chat or
    instruction data with held-out records (data.val_path)."""
    if not generates_text:
        raise ConfigError(
            f"{name} is not a language model; --generate scores generated answers of chat or "
            "instruction runs (drop --generate to evaluate it)"
        )
    if cfg.data.name != "chat":
        raise ConfigError(
            f"{name} trained on data.name = {cfg.data.name!r}; --generate scores answers to "
            "held-out prompts of chat or instruction data (data.name = 'chat'): drop "
            "--generate, or fine-tune on such records (docs/finetune.md)"
        )
    if not cfg.data.val_path:
        raise ConfigError(
            f"{name} has no held-out records to answer (data.val_path is empty); name some "
            "with --data.val_path=val.jsonl"
        )


def held_out(loaded: LoadedRun, limit: int = 0) -> list[HeldOut]:
    """The prompts and references of the run's `data.val_path` (the first `limit`; 0: all),
    written with the run's tokenizer as its training data was."""
    d, tokenizer = loaded.cfg.data, loaded.tokenizer
    assert tokenizer is not None
    templated = getattr(tokenizer, "chat_template", None) is not None
    fmt, prompts = d.format, []
    for where, record in read_records(d.val_path):
        if fmt == "auto":
            fmt = record_format(record, where)
        messages = conversation(record, fmt, where)
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        if templated:
            ids = chat_prompt_ids(tokenizer, messages[:last])
        else:  # hone.finetune.chat_data.plain_tokens: prompt + completion as plain text
            prompt, _ = plain_text(record, fmt)
            ids = tokenizer.encode(prompt)
        prompts.append(HeldOut(where, ids, messages[last]["content"]))
        if len(prompts) == limit:
            break
    if not prompts:
        raise ConfigError(f"data.val_path {d.val_path} holds no records; give one with some")
    return prompts


def default_max_new_tokens(loaded: LoadedRun, prompts: Sequence[HeldOut]) -> int:
    """Room for the longest reference and a little more: a model that goes on past the
    answer is cut soon after, which exact match fails anyway and containment does not need."""
    assert loaded.tokenizer is not None
    tokenizer = loaded.tokenizer
    # The end-of-turn token, and a BOS where the tokenizer writes one, fit in the margin.
    return max(len(tokenizer.encode(p.reference)) for p in prompts) + 8


def answers(
    loaded: LoadedRun,
    prompts: Sequence[HeldOut],
    max_new_tokens: int,
    progress: Callable[[], None] = lambda: None,
) -> list[str]:
    """Greedy answers of `loaded` to `prompts` (calls `progress` after each)."""
    context = loaded.task.context_length(loaded.spec)
    texts = []
    for prompt in prompts:
        ids = prompt.prompt_ids[-max(1, context - max_new_tokens) :]  # the window it fits
        texts.append(loaded.complete(ids, max_new_tokens, temperature=0.0).text)
        progress()
    return texts


def score(texts: Sequence[str], prompts: Sequence[HeldOut]) -> dict[str, float]:
    """Exact match and containment (fractions of the prompts) of answers against references."""
    pairs = [(t.strip(), p.reference.strip()) for t, p in zip(texts, prompts, strict=True)]
    return {
        "exact_match": sum(t == r for t, r in pairs) / len(pairs),
        "contains": sum(r in t for t, r in pairs) / len(pairs),
    }


def answer_losses(loaded: LoadedRun, models: Sequence[LoadedRun]) -> list[dict[str, float]]:
    """Loss (and perplexity) of each of `models` on every held-out example of `loaded`'s
    data, on the tokens the run learned from (its answers, data.train_on): what `hone eval`
    reports for the run itself. The data is read once."""
    from hone.data import build_data

    task, t = loaded.task, loaded.cfg.train
    data = build_data(loaded.cfg)
    if not task.has_split(data, "val"):
        raise ConfigError("the run's data has no validation examples; set --data.val_path")
    context = task.context_length(loaded.spec)
    batches = list(task.eval_batches(data, "val", task.eval_batch_size(t), context))
    loss_fn = task.loss(loaded.cfg.loss)
    return [
        evaluate(m.model, batches, loss_fn, task, m.device, m.precision.autocast) for m in models
    ]


def base_checkpoint(cfg: Config) -> str | None:
    """The checkpoint a run fine-tuned (its model.path), or None for a run from scratch."""
    return cfg.model.path if cfg.model.name == "pretrained" else None  # type: ignore[attr-defined]


def judge_run(
    run: str | Path,
    generate: bool = False,
    device: str = "auto",
    data: Sequence[str] = (),
    max_new_tokens: int = 0,
    limit: int = 0,
    progress: Callable[[int], Callable[[], None]] | None = None,
) -> dict[str, Any]:
    """The answer loss of run `run` and of its base checkpoint on the run's held-out examples;
    with `generate`, also their greedy answers to the held-out prompts scored (exact match,
    contains). `data`: `data.*` overrides (other held-out records: data.val_path=...).
    `progress(total)` returns a callback called after each answer. Written to
    RUN/eval-generate.json with every answer."""
    after = LoadedRun.load(run, device, data)
    check_judgeable(after.cfg, str(run), after.task.generates_text)
    base_path = base_checkpoint(after.cfg)
    base = LoadedRun.load(base_path, device) if base_path else None
    models = {label: m for label, m in (("before", base), ("after", after)) if m is not None}
    losses = answer_losses(after, list(models.values()))
    result: dict[str, Any] = {
        "run": str(run),
        "base": base_path,
        "models": {label: loss for label, loss in zip(models, losses, strict=True)},
    }
    if generate:
        prompts = held_out(after, limit)
        new_tokens = max_new_tokens or default_max_new_tokens(after, prompts)
        tick = progress(len(models) * len(prompts)) if progress else (lambda: None)
        result["max_new_tokens"] = new_tokens
        result["num_prompts"] = len(prompts)
        for label, loaded in models.items():
            texts = answers(loaded, prompts, new_tokens, tick)
            result["models"][label].update(score(texts, prompts))
            result["models"][label]["answers"] = texts
        result["prompts"] = [{"where": p.where, "reference": p.reference} for p in prompts]
    assert after.files is not None
    (after.files.root / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result
