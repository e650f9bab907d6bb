"""`--where` and `--sort` over run records.

A condition is KEY OP VALUE with OP one of = != < <= > >= ~ (contains). KEY is a column
(name, recipe, status, steps, best, ...), a key of summary.json (best_val_loss,
test_accuracy, stop_reason, num_parameters, ...), or a dotted config key (optim.lr,
model.width), which reads the run's config.toml. `=` matches shell-style patterns
(`name=gpt-*`). Numbers compare as numbers; a run without the key does not match.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hone.errors import ConfigError, did_you_mean
from hone.run_records import as_number
from hone.runs.records import RunRecord

_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(<=|>=|!=|==|=|<|>|~)\s*(.*?)\s*$")
COLUMNS = (
    "name",
    "recipe",
    "status",
    "steps",
    "best",
    "best_val_loss",
    "wall_seconds",
    "tokens_per_second",
    "steps_per_second",
    "started",
)
_ALIASES = {"time": "wall_seconds", "wall": "wall_seconds", "throughput": "steps_per_second"}


def lookup(record: RunRecord, key: str) -> Any:
    """The value of `key` for a run: a column, a summary key, or a dotted config key."""
    values = record.values()
    key = _ALIASES.get(key, key)
    if key in values:
        return values[key]
    if "." in key:
        node: Any = record.config()
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node
    return None


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


@dataclass(frozen=True)
class Condition:
    """One `--where` condition."""

    key: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Condition:
        match = _CONDITION.match(text)
        if match is None:
            raise ConfigError(
                f"--where must be KEY OP VALUE with OP one of = != < <= > >= ~, got {text!r}; "
                'e.g. --where recipe=mlp-digits or --where "best_val_loss<1.9"'
            )
        key, op, value = match.groups()
        return cls(key, "=" if op == "==" else op, value)

    def matches(self, record: RunRecord) -> bool:
        have = lookup(record, self.key)
        if have is None:
            return False
        a, b = as_number(have), as_number(self.value)
        if self.op in _COMPARE:
            if a is None or b is None:
                return _COMPARE[self.op](str(have), self.value)  # text: dates, names
            return _COMPARE[self.op](a, b)
        if self.op == "~":
            return self.value.lower() in str(have).lower()
        if a is not None and b is not None:
            equal = math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
        else:
            equal = fnmatch.fnmatchcase(str(have), self.value) or str(have) == self.value
            # "status=failed" matches "failed (exit 3)" too.
            if self.key == "status":
                equal = equal or str(have).split(" ")[0] == self.value
        return equal if self.op == "=" else not equal


def where(records: Sequence[RunRecord], conditions: Sequence[str]) -> list[RunRecord]:
    """The records that match every condition; a key no run has is an error naming those
    there are."""
    parsed = [Condition.parse(text) for text in conditions]
    for condition in parsed:
        if records and all(lookup(r, condition.key) is None for r in records):
            raise ConfigError(
                f"--where: no run has {condition.key!r}{did_you_mean(condition.key, known_keys(records))}; "
                f"keys: {', '.join(known_keys(records))}, or a config key such as optim.lr"
            )
    return [r for r in records if all(c.matches(r) for c in parsed)]


def known_keys(records: Sequence[RunRecord]) -> list[str]:
    """The keys that --where and --sort accept for these runs (besides config keys)."""
    keys: dict[str, None] = dict.fromkeys(COLUMNS)
    for record in records:
        keys.update(dict.fromkeys(record.values()))
    return list(keys)


def _sort_key(key: str) -> Callable[[RunRecord], tuple[int, Any]]:
    """Runs without the value last; numbers by value, text alphabetically. For "best", the
    best first: the metric's own direction decides (accuracy falls, perplexity rises)."""

    def value(record: RunRecord) -> tuple[int, Any]:
        have = lookup(record, key)
        if have is None:
            return (2, 0)
        number = as_number(have)
        if key == "best" and number is not None:
            return (0, -number if record.metric_direction == "max" else number)
        if number is not None and not isinstance(have, str):
            return (0, number)
        return (1, str(have))

    return value


def sort_runs(records: Sequence[RunRecord], key: str, reverse: bool = False) -> list[RunRecord]:
    """`records` ordered by `key` (a column, summary or config key); `reverse` flips it."""
    key = _ALIASES.get(key, key)
    if records and all(lookup(r, key) is None for r in records):
        raise ConfigError(
            f"--sort: no run has {key!r}{did_you_mean(key, known_keys(records))}; "
            f"sort by one of: {', '.join(COLUMNS)}, a summary key or a config key"
        )
    ordered = sorted(records, key=_sort_key(key))
    if reverse:  # runs without the value stay last
        have = [r for r in ordered if lookup(r, key) is not None]
        return have[::-1] + [r for r in ordered if lookup(r, key) is None]
    return ordered
