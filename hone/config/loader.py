"""Load a config from a recipe name or a TOML file, apply `--a.b=value` overrides, check it.

TOML is parsed by `tomllib` and written by `tomli_w`; what is written here is the typed
conversion between plain dicts and the dataclass tree, so that every mistake is reported
with the key that holds it and the flag that fixes it. Reading a recipe or file, with the
bases it builds on, is `hone.config.sources`.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w

from hone.config.components import ChosenComponent, FlatSection, SectionParts, type_hints
from hone.config.fields import field_default
from hone.config.schema import Config
from hone.config.sources import (
    chosen_sections,
    component_table,
    read_source,
    recipe_names,
    recipe_text,
)
from hone.config.step_bound import bound_steps
from hone.errors import ConfigError, did_you_mean

__all__ = ["read_source", "recipe_names", "recipe_text"]  # where callers have found them


def load_config(source: str | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a checked `Config` from a recipe or TOML file plus `a.b=value` overrides."""
    return config_from(source, overrides)


def config_from(
    source: str | Path | Config | Mapping[str, Any] | None,
    overrides: Sequence[str] = (),
    *,
    check: bool = True,
) -> Config:
    """A checked `Config` from whatever names one: a recipe name or TOML path (as
    `load_config`), a `Config` (copied, not changed), a nested dict in the shape of the TOML
    file, or None (the defaults); then the `a.b=value` overrides. `check=False` leaves the
    cross-field checks to the caller (the trainer checks once it knows its parts)."""
    if isinstance(source, Config):
        if not overrides:
            cfg = copy.deepcopy(source)
            bound_steps(cfg)
            if check:
                validate(cfg)
            return cfg
        raw, default_name = to_dict(source), source.recipe
    elif isinstance(source, Mapping):
        raw, default_name = copy.deepcopy(dict(source)), ""
    elif source is None:
        raw, default_name = {}, ""
    else:
        raw, default_name = read_source(str(source))
    overrides = [item.removeprefix("--") for item in overrides]
    switch_model_family(raw, overrides)
    for item in overrides:
        apply_override(raw, item)
    cfg = from_dict(raw)
    if not cfg.recipe:
        cfg.recipe = default_name
    bound_steps(cfg)  # $HONE_MAX_STEPS, for checks that run commands as typed
    if check:
        validate(cfg)
    return cfg


def switch_model_family(raw: dict[str, Any], overrides: Sequence[str]) -> None:
    """An override that picks another component than the file's (`model.name`, `optim.name`)
    replaces the file's: the file's keys of its own component are dropped (`hone train
    --model.name=linear` on a GPT recipe, `--optim.name=adamw` on an SGD one), while every key
    the overrides set must still apply to the new component."""
    for section, cls in chosen_sections().items():
        flag = f"{section}.name="
        names = [item.partition("=")[2] for item in overrides if item.startswith(flag)]
        table = raw.get(section)
        if names and isinstance(table, dict):
            raw[section] = component_table(cls, table, names[-1])


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one 'a.b=value' (the leading '--' already removed) to a raw config dict."""
    key, sep, text = item.partition("=")
    if not sep:
        raise ConfigError(f"override {item!r} has no value; write it as --{key}=VALUE")
    parts = key.split(".")
    kind = _field_type(parts)
    value: Any = text if kind is str else _parse_value(text)
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {key}: {part} is not a section")
    node[parts[-1]] = value


def _parse_value(text: str) -> Any:
    """Read an override value as a TOML value (3e-4, true, [1, 2]); else keep the string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if "," in text:  # allow --optim.betas=0.9,0.99
            try:
                return tomllib.loads(f"v = [{text}]")["v"]
            except tomllib.TOMLDecodeError:
                pass
        return text


def _field_type(parts: list[str]) -> Any:
    """The declared type at a dotted path, or a ConfigError naming the closest valid key.

    Under `model` (and `optim`), the keys of every registered family are accepted: the family
    is known only when the whole config is built, which refuses a key that does not apply.
    """
    cls: Any = Config
    for i, part in enumerate(parts):
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            if _origin(cls) is dict:
                return Any  # free-form table such as model.kwargs or tune.space
            raise ConfigError(
                f"unknown config key {'.'.join(parts)!r}: {'.'.join(parts[:i])} has no sub-keys"
            )
        hints = _keys(cls)
        if part not in hints:
            prefix = ".".join(parts[:i])
            known = [f"{prefix}.{n}" if prefix else n for n in hints]
            full = ".".join(parts[: i + 1])
            raise ConfigError(
                f"unknown config key {full!r}{did_you_mean(full, known)}; see `hone config show` for every key"
            )
        cls = hints[part]
    return cls


def _keys(cls: Any) -> dict[str, Any]:
    """The keys of a config table and their types; a section with flattened fields includes
    theirs (a chosen component's section, such as model, every component's)."""
    hints = {
        f.name: hint
        for f, hint in zip(dataclasses.fields(cls), _hints(cls), strict=True)
        if not f.metadata.get("flatten")
    }
    if issubclass(cls, FlatSection):
        for part in cls.part_classes():
            hints = {**_own_keys(part), **hints}
    return hints


def _hints(cls: Any) -> list[Any]:
    types_by_name = type_hints(cls)
    return [types_by_name[f.name] for f in dataclasses.fields(cls)]


def _own_keys(cls: Any) -> dict[str, Any]:
    return dict(zip((f.name for f in dataclasses.fields(cls)), _hints(cls), strict=True))


def _origin(tp: Any) -> Any:
    return typing.get_origin(tp) or tp


def from_dict(raw: dict[str, Any], cls: Any = Config, prefix: str = "") -> Any:
    """Convert a raw dict into the dataclass `cls`, checking keys and types."""
    if issubclass(cls, ChosenComponent):
        return _chosen_from_dict(raw, prefix, cls)
    hints = _keys(cls) if issubclass(cls, SectionParts) else type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if key not in hints:
            known = [f"{prefix}{n}" for n in hints]
            raise ConfigError(
                f"unknown config key {path!r}{did_you_mean(path, known)}; see `hone config show` for every key"
            )
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{path} must be a table of settings, got {value!r}")
            kwargs[key] = from_dict(value, tp, f"{path}.")
        else:
            kwargs[key] = _coerce(value, tp, path)
    return cls(**kwargs)


def _chosen_from_dict(raw: dict[str, Any], prefix: str, cls: type[ChosenComponent]) -> Any:
    """A flat table such as [model]: the common keys, and those of the component `name` picks."""
    components = cls.components
    common = {k: tp for k, tp in _own_keys(cls).items() if k != cls.own}
    name = _coerce(raw.get("name", cls.name), str, f"{prefix}name")
    family = components.config_class(name)
    own = _own_keys(family)
    values: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if key in common:
            values[key] = _coerce(value, common[key], path)
        elif key in own:
            fields[key] = _coerce(value, own[key], path)
        elif components.owners(key):
            raise ConfigError(components.not_applicable(key, name))
        else:
            known = [f"{prefix}{n}" for n in _keys(cls)]
            raise ConfigError(
                f"unknown config key {path!r}{did_you_mean(path, known)}; see `hone config keys` for every key"
            )
    return cls(**{cls.own: family(**fields)}, **values)


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = _origin(tp)
    if origin is types.UnionType or origin is typing.Union:
        return value
    if tp is Any:
        return value
    if origin is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(
            f"{path} must be true or false, got {value!r}; set --{path}=true or --{path}=false"
        )
    if origin is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path} must be an integer, got {value!r}; set --{path}=<integer>")
    if origin is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{path} must be a number, got {value!r}; set --{path}=<number>")
    if origin is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path} must be a string, got {value!r}; set --{path}=<text>")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path} must be a list, got {value!r}; set --{path}=[a, b]")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a table, got {value!r}")
        return value
    raise AssertionError(f"unsupported config type {tp} at {path}")


def validate(cfg: Any, prefix: str = "") -> None:
    """Check every field's range and choices; then the cross-field rules of the tree."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            validate(value, prefix if f.metadata.get("flatten") else f"{path}.")
            continue
        meta = f.metadata
        if "choices" in meta and value not in meta["choices"]:
            raise ConfigError(
                f"{path} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}{did_you_mean(str(value), meta['choices'])}"
            )
        for check, ok, word in (
            ("ge", lambda v, b: v >= b, "at least"),
            ("gt", lambda v, b: v > b, "greater than"),
            ("le", lambda v, b: v <= b, "at most"),
            ("lt", lambda v, b: v < b, "less than"),
        ):
            if check in meta and not ok(value, meta[check]):
                raise ConfigError(
                    f"{path} must be {word} {meta[check]}, got {value}; set --{path}=<valid value>"
                )
    if callable(getattr(type(cfg), "validate", None)):
        cfg.validate()  # a component's own cross-field rules
    if prefix == "":
        _validate_tree(cfg)


def _validate_tree(cfg: Config) -> None:
    t = cfg.train
    if not (t.max_steps or t.max_epochs or t.max_seconds):
        raise ConfigError(
            "the run has no bound: set --train.max_steps, --train.max_epochs or --train.max_seconds"
        )
    if cfg.data.val_fraction + cfg.data.test_fraction >= 1:
        raise ConfigError(
            "data.val_fraction + data.test_fraction must be below 1; lower one of them"
        )
    if not (t.threads == "auto" or (type(t.threads) is int and t.threads >= 1)):
        raise ConfigError(
            f"train.threads must be 'auto' or a positive integer, got {t.threads!r}; "
            "set --train.threads=auto or --train.threads=<cores>"
        )
    if not (t.monitor == "val_loss" or t.monitor.startswith("val_")):
        raise ConfigError(f"train.monitor must be val_loss or val_<metric>, got {t.monitor!r}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain dicts; a family's fields sit flat in the [model] table."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            if f.metadata.get("flatten"):
                out.update(to_dict(value))
            else:
                out[f.name] = to_dict(value)
        else:
            out[f.name] = copy.deepcopy(value)
    return out


def to_toml(cfg: Config) -> str:
    """The fully resolved config as TOML, accepted back unchanged by `load_config`."""
    return tomli_w.dumps(to_dict(cfg))


def field_help(cls: Any = Config, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(key, default, help) for every leaf field, in declaration order.

    A chosen component's section (model, optim, data) lists its common keys first, then each
    registered component's keys, their help prefixed by its names ("gpt: number of
    transformer blocks"; one row for names that share a config class: "adam, adamw: ...").
    A section of fixed parts ([train]) lists each part's keys where the part sits.
    """
    rows = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("flatten"):
            if issubclass(cls, SectionParts):
                rows += field_help(cls.parts.part(f.name), prefix)
            continue
        tp = type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            rows += field_help(tp, f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", field_default(f), f.metadata.get("help", "")))
    if isinstance(cls, type) and issubclass(cls, ChosenComponent):
        names_of: dict[type, list[str]] = {}
        for name, config in cls.components.classes().items():
            names_of.setdefault(config, []).append(name)
        for config, names in names_of.items():
            rows += [
                (key, default, f"{', '.join(names)}: {help_text}")
                for key, default, help_text in field_help(config, prefix)
            ]
    return rows
