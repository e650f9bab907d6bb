"""Instruction and chat records as people write them, read and checked one by one.

Three formats (hone.finetune.chat_data has examples): `messages` (a conversation of
{"role", "content"} turns), `prompt_completion` and Alpaca's `instruction` / `input` /
`output`. Each record is read from a JSON-lines file, a folder a datasets.Dataset was saved
to, or a Dataset handed in, together with where it was read ("chat.jsonl line 7"), so that a
record that is not of its format is refused in one line naming the file, the line and the
field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from hone.errors import ConfigError

# The keys that tell each format apart, in the order "auto" tries them.
FORMAT_KEYS: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "alpaca": ("instruction", "output"),
}
Source = str | Path | Iterable[Mapping[str, Any]]  # a file or folder, or a datasets.Dataset
Record = tuple[str, Any]  # (where it was read, e.g. "chat.jsonl line 7"; the record)


def read_records(source: Source) -> Iterator[Record]:
    """The records of a JSON-lines file, of a folder a datasets.Dataset was saved to, or of a
    Dataset (any iterable of dicts) handed in, each with where it was read."""
    if not isinstance(source, str | Path):
        for number, record in enumerate(source, 1):
            yield f"row {number}", record
        return
    path = Path(source).expanduser()
    if path.is_dir():
        yield from read_records(_saved_dataset(path))
        return
    if not path.is_file():
        raise ConfigError(f"data.path {source} does not exist; set --data.path=chat.jsonl")
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                where = f"{path.name} line {number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ConfigError(
                        f"{where}: not valid JSON ({e.msg}, column {e.colno}); each line must "
                        "hold one JSON object"
                    ) from None
                yield where, record
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path} must be UTF-8 text, got undecodable bytes ({e.reason})"
        ) from None


def _saved_dataset(folder: Path) -> Iterable[Mapping[str, Any]]:
    try:
        import datasets  # type: ignore[import-untyped]
    except ImportError:
        raise ConfigError(
            f"data.path {folder} is a folder: reading a saved datasets.Dataset needs the datasets "
            "package (pip install datasets), or set --data.path to a .jsonl file"
        ) from None
    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.DatasetDict):
        raise ConfigError(
            f"data.path {folder} holds several splits ({', '.join(loaded)}); set --data.path "
            f"to one of them ({folder / next(iter(loaded))}) and --data.val_path to another"
        )
    return loaded  # type: ignore[no-any-return]


def record_format(record: Any, where: str) -> str:
    """The format whose keys `record` has (data.format = "auto")."""
    if isinstance(record, Mapping):
        for name, keys in FORMAT_KEYS.items():
            if all(key in record for key in keys):
                return name
    raise ConfigError(
        f"{where}: a record must have 'messages', 'prompt' and 'completion', or 'instruction' "
        f"and 'output' (Alpaca), got {_show(record)}; set --data.format to the records' format"
    )


def conversation(record: Any, fmt: str, where: str) -> list[dict[str, Any]]:
    """The record as chat messages ({"role", "content"} dicts); a one-line ConfigError naming
    `where` and the field for a record that is not of format `fmt`."""
    if not isinstance(record, Mapping):
        raise ConfigError(f"{where}: a record must be a JSON object, got {_show(record)}")
    if fmt == "messages":
        messages = record.get("messages")
        if not (isinstance(messages, list) and messages and all(map(_is_message, messages))):
            raise ConfigError(
                f"{where}: 'messages' must be a list of {{role, content}} objects with string "
                f"values, got {_show(messages)}"
            )
        if not any(message["role"] == "assistant" for message in messages):
            roles = [message["role"] for message in messages]
            raise ConfigError(
                f"{where}: 'messages' has no assistant turn to learn, got roles {roles}"
            )
        return [dict(message) for message in messages]
    if fmt == "prompt_completion":
        prompt, answer = _text(record, "prompt", where), _text(record, "completion", where)
    else:
        instruction, extra = (
            _text(record, "instruction", where),
            _text(record, "input", where, True),
        )
        prompt, answer = (
            (f"{instruction}\n\n{extra}" if extra else instruction),
            _text(record, "output", where),
        )
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def plain_text(record: Mapping[str, Any], fmt: str) -> tuple[str, str]:
    """(prompt, completion) as plain text, for a tokenizer without a chat template: a
    prompt/completion pair as written, an Alpaca record's parts a blank line apart."""
    if fmt == "prompt_completion":
        return record["prompt"], record["completion"]
    parts = [record["instruction"], record.get("input") or ""]
    return "\n\n".join(part for part in parts if part) + "\n\n", record["output"]


def _is_message(message: Any) -> bool:
    return (
        isinstance(message, Mapping)
        and isinstance(message.get("role"), str)
        and isinstance(message.get("content"), str)
    )


def _text(record: Mapping[str, Any], key: str, where: str, optional: bool = False) -> str:
    value = record.get(key)
    if optional and value is None:
        return ""
    if not isinstance(value, str):
        got = _show(value) if key in record else "nothing (no such key)"
        raise ConfigError(f"{where}: '{key}' must be a string, got {got}")
    return value


def _show(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
