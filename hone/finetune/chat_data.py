"""`data.name = "chat"`: instruction and chat data for fine-tuning a checkpoint.

    [model]
    name = "pretrained"
    path = "hf:HuggingFaceTB/SmolLM2-135M-Instruct"

    [data]
    name = "chat"
    path = "chat.jsonl"      # one JSON record a line, or a folder a datasets.Dataset was saved to
    train_on = "answers"     # the loss on the assistant's tokens only ("all": on every token)
    pack = true              # several examples per training row (hone.finetune.packing)

A record is in one of three formats (`data.format`; "auto" takes it from the first record;
hone.finetune.chat_records reads and checks them):

    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    {"prompt": "2 + 2 =", "completion": " 4"}
    {"instruction": "Translate to French", "input": "cat", "output": "chat"}      (Alpaca)

Each is written as the checkpoint's chat template writes a conversation (a prompt and its
completion, or an Alpaca record, become one user turn and one assistant turn), so the model
learns in the form it is asked in later (`hone chat`, serve's chat completions). With a
tokenizer that has no template, a record is prompt + completion + EOS as plain text.

Which tokens carry the loss is found on token ids, not by searching the text: the conversation
before each assistant turn, rendered with the template's generation prompt, is a prefix of the
whole conversation's ids, and the answer is what follows it up to where the conversation
through that turn ends (its end-of-turn token included: the model must learn to stop). Where a
template writes earlier turns differently once later ones follow, the ids part earlier and the
answer is taken from there: a few template tokens too many, never an answer token too few.

An example longer than the model's context is dropped, or with `data.too_long = "cut_prompt"`
loses the start of its prompt when no answer token goes with it; either way the data's
description counts it. Nothing is cut silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hone.config import Config, opt, register_data_config
from hone.data.base import DATASETS, ExampleData
from hone.data.batching import IGNORE_INDEX
from hone.data.text.pretrained_tokenizer import PretrainedTokenizer
from hone.errors import ConfigError
from hone.finetune.chat_records import (
    FORMAT_KEYS,
    Record,
    Source,
    conversation,
    plain_text,
    read_records,
    record_format,
)
from hone.finetune.packing import pack_rows


@register_data_config("chat")
@dataclass
class ChatDataConfig:
    """`data.*` keys of instruction and chat data."""

    path: str = opt(
        "",
        "a JSON-lines file of records (messages, prompt/completion or Alpaca), or a folder a "
        "datasets.Dataset was saved to (save_to_disk)",
    )
    val_path: str = opt("", "validation records of their own; empty: data.val_fraction of path's")
    format: str = opt(
        "auto",
        "the records' format; auto: from the first record's keys",
        choices=["auto", *FORMAT_KEYS],
    )
    train_on: str = opt(
        "answers",
        "the tokens the loss is taken on: the assistant's answers (with their end of turn), or all",
        choices=["answers", "all"],
    )
    pack: bool = opt(
        False, "pack several examples into each training row; attention stays within each one"
    )
    too_long: str = opt(
        "drop",
        "examples longer than the model's context: drop them, or cut_prompt: cut the prompt's "
        "start (never an answer token; else dropped)",
        choices=["drop", "cut_prompt"],
    )
    tokenizer_path: str = opt(
        "", "the folder of the checkpoint's tokenizer (model.name = 'pretrained' sets it)"
    )


@dataclass
class Counts:
    """What became of the records read: the data's description reports every number."""

    records: int = 0
    too_long: int = 0  # dropped: longer than the context
    cut: int = 0  # kept without the start of their prompt
    no_answer: int = 0  # dropped: not one token to learn from

    def add(self, other: Counts) -> None:
        self.records += other.records
        self.too_long += other.too_long
        self.cut += other.cut
        self.no_answer += other.no_answer


# ------------------------------------------------------------------------ tokens and labels
def template_tokens(
    tokenizer: PretrainedTokenizer, messages: list[dict[str, Any]], train_on: str
) -> tuple[list[int], np.ndarray]:
    """The conversation's ids through the chat template, and which of them the loss is taken
    on (bool, one per id): every one, or the assistant's answers (see the module's doc)."""
    ids = tokenizer.apply_chat_template(messages, tokenize=True)
    trained = np.full(len(ids), train_on == "all")
    if train_on == "all":
        return ids, trained
    for turn, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(
            messages[:turn], add_generation_prompt=True, tokenize=True
        )
        through = tokenizer.apply_chat_template(messages[: turn + 1], tokenize=True)
        trained[_common_prefix(before, ids) : _common_prefix(through, ids)] = True
    return ids, trained


def plain_tokens(
    tokenizer: PretrainedTokenizer, prompt: str, completion: str, train_on: str
) -> tuple[list[int], np.ndarray]:
    """prompt + completion + EOS, tokenized apart so the boundary is exact; the loss on the
    completion and its EOS (or on all of it)."""
    if tokenizer.eos_id is None:
        raise ConfigError(
            f"{tokenizer.name} names no eos_token, which ends each plain-text example; add "
            "eos_token to its tokenizer_config.json"
        )
    head = tokenizer.encode(prompt)  # a BOS first where the checkpoint writes one
    answer = [*tokenizer.encode(completion, add_special_tokens=False), tokenizer.eos_id]
    trained = np.r_[np.full(len(head), train_on == "all"), np.ones(len(answer), dtype=bool)]
    return [*head, *answer], trained


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if len(differ) else n


def example_row(ids: list[int], trained: np.ndarray) -> np.ndarray:
    """(3, L - 1) int32: inputs ids[:-1], targets ids[1:] (-100 where not trained) and
    positions 0 .. L - 2 (hone.data.base.ExampleData)."""
    tokens = np.asarray(ids, dtype=np.int64)
    targets = np.where(trained[1:], tokens[1:], IGNORE_INDEX)
    return np.stack([tokens[:-1], targets, np.arange(len(tokens) - 1)]).astype(np.int32)


def fit_context(row: np.ndarray, context_length: int, too_long: str) -> np.ndarray | None:
    """`row` if it fits the context; with too_long = "cut_prompt", the row without its first
    tokens when none of them is trained; else None (dropped)."""
    excess = row.shape[1] - context_length
    if excess <= 0:
        return row
    first_trained = int(np.argmax(row[1] != IGNORE_INDEX))
    if too_long != "cut_prompt" or excess > first_trained:
        return None
    cut = row[:, excess:].copy()
    cut[2] = np.arange(cut.shape[1])  # positions from 0 again: the example starts here now
    return cut


def chat_rows(
    tokenizer: PretrainedTokenizer,
    records: Iterable[Record],
    fmt: str,
    train_on: str,
    context_length: int,
    too_long: str = "drop",
) -> tuple[list[np.ndarray], Counts, str]:
    """Every record as an example row that fits `context_length` tokens: (rows, what became
    of the records, the format read; `fmt` "auto" decides it at the first record)."""
    rows: list[np.ndarray] = []
    counts = Counts()
    for where, record in records:
        if fmt == "auto":
            fmt = record_format(record, where)
        messages = conversation(record, fmt, where)
        counts.records += 1
        if tokenizer.chat_template is not None:
            ids, trained = template_tokens(tokenizer, messages, train_on)
        elif fmt == "messages":
            raise ConfigError(
                f"{where}: 'messages' are written through a chat template, and {tokenizer.name} "
                "has none; use an instruct checkpoint's tokenizer, or prompt/completion records"
            )
        else:
            ids, trained = plain_tokens(tokenizer, *plain_text(record, fmt), train_on)
        if not trained[1:].any():  # the first token is no one's target
            counts.no_answer += 1
            continue
        row = fit_context(example_row(ids, trained), context_length, too_long)
        if row is None:
            counts.too_long += 1
            continue
        counts.cut += row.shape[1] < len(ids) - 1
        rows.append(row)
    return rows, counts, fmt


# ------------------------------------------------------------------------ the data set
def build_chat_data(cfg: Config, source: Source | None = None) -> ExampleData:
    """Chat data read as `cfg.data` says, from `data.path` or from `source` (a file, a saved
    Dataset's folder, or a datasets.Dataset handed in), for a model of `cfg.model`'s context:

        data = build_chat_data(cfg, datasets.load_dataset("json", data_files="chat.jsonl")["train"])
        hone.Trainer(config=cfg, data=data).fit()
    """
    d = cfg.data
    context = cfg.model.context_length
    if context < 1:
        raise ConfigError(
            "data.name = 'chat' fits examples to the model's context length, which is not set; "
            "set --model.block_size (or use --model.name=pretrained)"
        )
    if source is None and not d.path:
        raise ConfigError("data.name = 'chat' needs records; set --data.path=chat.jsonl")
    if not d.tokenizer_path:
        raise ConfigError(
            "data.name = 'chat' writes records with a checkpoint's tokenizer and chat template; "
            "set --model.name=pretrained --model.path=CHECKPOINT (which sets it) or "
            "--data.tokenizer_path=FOLDER"
        )
    tokenizer = PretrainedTokenizer.load(Path(d.tokenizer_path).expanduser())
    settings = (d.train_on, context, d.too_long)
    records = read_records(source if source is not None else d.path)
    rows, counts, fmt = chat_rows(tokenizer, records, d.format, *settings)
    if d.val_path:
        train = rows
        val, val_counts, _ = chat_rows(tokenizer, read_records(d.val_path), d.format, *settings)
        counts.add(val_counts)
    else:
        train, val = split_rows(rows, d.val_fraction, d.split_seed)
    if not train:
        raise ConfigError(
            f"no training example is left of {counts.records} records ({counts.too_long} longer "
            f"than the model's {context}-token context, {counts.no_answer} without an answer); "
            "set --model.block_size higher or --data.too_long=cut_prompt"
        )
    packed = pack_rows(train, context) if d.pack else []
    pad_id = next((i for i in (tokenizer.pad_id, tokenizer.eos_id) if i is not None), 0)
    name = Path(d.path).name if source is None else type(source).__name__
    return ExampleData(
        train=train,
        val=val,
        tokenizer=tokenizer,
        vocab_size=tokenizer.vocab_size,
        context_length=context,
        pad_id=pad_id,
        packed_train=packed,
        description=describe(name, fmt, d.train_on, train, val, counts, context, len(packed)),
    )


def split_rows(
    rows: list[np.ndarray], val_fraction: float, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(train, val): `val_fraction` of the examples, drawn with `seed`, validate (at least
    one when the fraction is not 0 and two or more examples are there); both in file order."""
    num_val = round(len(rows) * val_fraction)
    if val_fraction > 0 and len(rows) > 1:
        num_val = min(max(1, num_val), len(rows) - 1)
    held = set(np.random.default_rng(seed).permutation(len(rows))[:num_val].tolist())
    return (
        [row for i, row in enumerate(rows) if i not in held],
        [row for i, row in enumerate(rows) if i in held],
    )


def describe(
    name: str,
    fmt: str,
    train_on: str,
    train: list[np.ndarray],
    val: list[np.ndarray],
    counts: Counts,
    context: int,
    num_packed: int,
) -> str:
    """The data's one-line description: what was read, what was kept, what was dropped."""
    tokens = sum(row.shape[1] for row in train)
    trained = sum(int((row[1] != IGNORE_INDEX).sum()) for row in train)
    text = (
        f"{name}: {counts.records:,} {fmt} records, {len(train):,} train / {len(val):,} "
        f"validation examples, {trained:,} of {tokens:,} training tokens learned ({train_on}); "
        f"{counts.too_long:,} longer than the {context:,}-token context dropped"
    )
    if counts.cut:
        text += f", {counts.cut:,} cut at the prompt's start"
    if counts.no_answer:
        text += f", {counts.no_answer:,} without an answer token dropped"
    if num_packed:
        text += f"; packed into {num_packed:,} rows"
    return text


@DATASETS.register("chat")
def chat(cfg: Config) -> ExampleData:
    """Instruction and chat records (`data.path`), read with the checkpoint's tokenizer."""
    return build_chat_data(cfg)
