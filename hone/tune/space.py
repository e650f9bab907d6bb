"""The search space: `[tune.space]` entries keyed by config path, parsed into Optuna parameters.

Syntax (TOML; the path is quoted so that it stays one key):

    [tune.space]
    "optim.lr" = {type = "float", low = 1e-4, high = 1.0, log = true}
    "model.width" = {type = "int", low = 16, high = 256, step = 16}
    "optim.name" = {choices = ["sgd", "adamw"]}
    "optim.momentum" = {type = "float", low = 0.0, high = 0.99, when = {"optim.name" = "sgd"}}

`when` makes an entry conditional: it is sampled only when every listed config path has the
given value (or one of a list of values) in the trial's config. Categorical choices may be any
config value; lists and tables are carried through Optuna as their JSON text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from hone.errors import ConfigError
from hone.registry import Registry

# Optuna's categorical distribution holds only these; anything else travels as JSON text.
_PRIMITIVE = (type(None), bool, int, float, str)
_EXAMPLE = '{type = "float", low = 1e-4, high = 1e-1, log = true}'


@dataclass(frozen=True)
class Param:
    """One entry of the space: a config path, its distribution, and when it is active."""

    path: str
    distribution: optuna.distributions.BaseDistribution
    when: dict[str, list[Any]] = field(default_factory=dict)
    json_choices: bool = False  # categorical choices encoded as JSON text

    def suggest(self, trial: optuna.Trial) -> Any:
        """Sample this parameter in `trial`; returns the config value."""
        d = self.distribution
        if isinstance(d, optuna.distributions.FloatDistribution):
            return trial.suggest_float(self.path, d.low, d.high, step=d.step, log=d.log)
        if isinstance(d, optuna.distributions.IntDistribution):
            return trial.suggest_int(self.path, d.low, d.high, step=d.step, log=d.log)
        assert isinstance(d, optuna.distributions.CategoricalDistribution)
        return self.decode(trial.suggest_categorical(self.path, d.choices))

    def decode(self, value: Any) -> Any:
        """Optuna's stored value -> the config value."""
        return json.loads(value) if self.json_choices else value

    def active(self, values: Callable[[str], Any]) -> bool:
        """Whether every condition holds, reading config values through `values`."""
        return all(values(path) in accepted for path, accepted in self.when.items())

    def extremes(self) -> list[Any]:
        """Config values that span the range: checked against the config before any trial."""
        d = self.distribution
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            return [self.decode(c) for c in d.choices]
        assert isinstance(
            d, optuna.distributions.FloatDistribution | optuna.distributions.IntDistribution
        )
        return [d.low, d.high]

    def grid(self) -> list[Any]:
        """The finite set of values the grid sampler walks through (Optuna's stored values)."""
        d = self.distribution
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            return list(d.choices)
        if isinstance(d, optuna.distributions.IntDistribution) and not d.log:
            return list(range(d.low, d.high + 1, d.step))
        if isinstance(d, optuna.distributions.FloatDistribution) and d.step is not None:
            count = int(round((d.high - d.low) / d.step)) + 1
            return [d.low + i * d.step for i in range(count)]
        raise ConfigError(
            f"tune.space['{self.path}'] has no finite grid for the grid sampler; "
            f"give it a step or choices, or pick another --sampler"
        )


ParamParser = Callable[[str, dict[str, Any]], optuna.distributions.BaseDistribution]
PARAM_TYPES: Registry[ParamParser] = Registry("parameter type", "tune.space.<path>.type")


def _bad(path: str, problem: str, got: Any) -> ConfigError:
    return ConfigError(f"tune.space['{path}'] {problem}, got {got!r}; e.g. \"{path}\" = {_EXAMPLE}")


def _number(path: str, spec: dict[str, Any], key: str, integer: bool = False) -> Any:
    if key not in spec:
        raise _bad(path, f"needs '{key}'", spec)
    value = spec[key]
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not math.isfinite(value):
        raise _bad(path, f"{key} must be {'an integer' if integer else 'a number'}", value)
    return value


def _check_keys(path: str, spec: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(spec) - allowed - {"type", "when"})
    if unknown:
        raise _bad(
            path, f"has unknown keys {unknown} (allowed: {', '.join(sorted(allowed))}, when)", spec
        )


def _flag(path: str, spec: dict[str, Any], key: str) -> bool:
    value = spec.get(key, False)
    if not isinstance(value, bool):
        raise _bad(path, f"{key} must be true or false", value)
    return value


@PARAM_TYPES.register("float")
def _float(path: str, spec: dict[str, Any]) -> optuna.distributions.BaseDistribution:
    _check_keys(path, spec, {"low", "high", "log", "step"})
    low, high = float(_number(path, spec, "low")), float(_number(path, spec, "high"))
    log = _flag(path, spec, "log")
    step = float(_number(path, spec, "step")) if "step" in spec else None
    if low > high:
        raise _bad(path, "low must not exceed high", (low, high))
    if log and low <= 0:
        raise _bad(path, "low must be positive when log = true", low)
    if step is not None and (step <= 0 or log):
        raise _bad(path, "step must be positive and cannot be used with log = true", step)
    return optuna.distributions.FloatDistribution(low, high, log=log, step=step)


@PARAM_TYPES.register("int")
def _int(path: str, spec: dict[str, Any]) -> optuna.distributions.BaseDistribution:
    _check_keys(path, spec, {"low", "high", "log", "step"})
    low, high = _number(path, spec, "low", True), _number(path, spec, "high", True)
    log = _flag(path, spec, "log")
    step = _number(path, spec, "step", True) if "step" in spec else 1
    if low > high:
        raise _bad(path, "low must not exceed high", (low, high))
    if log and low < 1:
        raise _bad(path, "low must be at least 1 when log = true", low)
    if step < 1 or (log and step != 1):
        raise _bad(path, "step must be a positive integer (and 1 with log = true)", step)
    return optuna.distributions.IntDistribution(low, high, log=log, step=step)


@PARAM_TYPES.register("categorical")
def _categorical(path: str, spec: dict[str, Any]) -> optuna.distributions.BaseDistribution:
    _check_keys(path, spec, {"choices"})
    choices = spec.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _bad(path, "choices must be a non-empty list", choices)
    if not all(isinstance(c, _PRIMITIVE) for c in choices):
        choices = [json.dumps(c, sort_keys=True) for c in choices]
    if len(set(map(repr, choices))) != len(choices):
        raise _bad(path, "choices must be distinct", spec["choices"])
    return optuna.distributions.CategoricalDistribution(choices)


def _conditions(path: str, when: Any) -> dict[str, list[Any]]:
    if not isinstance(when, dict) or not when:
        raise ConfigError(
            f"tune.space['{path}'].when must be a table of config path = value(s), got {when!r}; "
            f'e.g. when = {{"optim.name" = "sgd"}}'
        )
    flat = _flatten(when, "", lambda v: not isinstance(v, dict))
    return {key: (value if isinstance(value, list) else [value]) for key, value in flat.items()}


def _flatten(
    table: Mapping[str, Any], prefix: str, is_leaf: Callable[[Any], bool]
) -> dict[str, Any]:
    """Both `"optim.lr" = {...}` and nested `[tune.space.optim] lr = {...}` name optim.lr."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if is_leaf(value):
            flat[path] = value
        elif isinstance(value, dict):
            flat.update(_flatten(value, f"{path}.", is_leaf))
        else:
            raise _bad(path, "must be a table like", value)
    return flat


def _is_entry(value: Any) -> bool:
    """An entry holds settings (type, low, ...); a table of only tables nests paths."""
    return isinstance(value, dict) and (
        not value or any(not isinstance(v, dict) for v in value.values())
    )


def parse_param(path: str, spec: dict[str, Any]) -> Param:
    """One `[tune.space]` entry -> a `Param`; a ConfigError names the entry and the fix."""
    kind = spec.get("type", "categorical" if "choices" in spec else None)
    if kind is None:
        raise _bad(path, "needs a type (float, int or categorical)", spec)
    try:
        parser = PARAM_TYPES.get(str(kind))
    except ConfigError as e:
        raise ConfigError(f"tune.space['{path}']: {e}") from None
    distribution = parser(path, spec)
    when = _conditions(path, spec["when"]) if "when" in spec else {}
    json_choices = isinstance(
        distribution, optuna.distributions.CategoricalDistribution
    ) and not all(isinstance(c, _PRIMITIVE) for c in spec.get("choices", []))
    return Param(path, distribution, when, json_choices)


class SearchSpace:
    """The parsed `[tune.space]`, ordered so that every condition is sampled before its user."""

    def __init__(self, params: list[Param]) -> None:
        self.params = _ordered(params)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> SearchSpace:
        """Parse `tune.space` (flat quoted paths or nested tables)."""
        entries = _flatten(raw, "", _is_entry)
        return cls([parse_param(path, spec) for path, spec in entries.items()])

    def __len__(self) -> int:
        return len(self.params)

    def sample(self, trial: optuna.Trial, base: Callable[[str], Any]) -> dict[str, Any]:
        """Suggest every active parameter; `base(path)` reads the untuned config's values."""
        values: dict[str, Any] = {}

        def lookup(path: str) -> Any:
            return values[path] if path in values else base(path)

        for param in self.params:
            if param.active(lookup):
                values[param.path] = param.suggest(trial)
        return values

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """An Optuna trial's stored params -> config values."""
        by_path = {p.path: p for p in self.params}
        return {
            path: by_path[path].decode(v) if path in by_path else v for path, v in params.items()
        }

    def grid(self) -> dict[str, list[Any]]:
        """Every parameter's grid, for the grid sampler."""
        return {p.path: p.grid() for p in self.params}


def _ordered(params: list[Param]) -> list[Param]:
    """Topological order over `when` references; a cycle is a user error."""
    by_path = {p.path: p for p in params}
    done: dict[str, Param] = {}
    visiting: set[str] = set()

    def visit(param: Param) -> None:
        if param.path in done:
            return
        if param.path in visiting:
            raise ConfigError(
                f"tune.space['{param.path}'].when depends on itself through other entries; "
                "remove one of the conditions"
            )
        visiting.add(param.path)
        for path in param.when:
            if path in by_path:
                visit(by_path[path])
        visiting.discard(param.path)
        done[param.path] = param

    for param in params:
        visit(param)
    return list(done.values())
