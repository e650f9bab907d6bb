"""How to rebuild a model handed in from Python: an importable class and its arguments.

A run keeps its weights, never the model object (nothing is pickled), so `hone eval`,
`serve`, `export` and `compress` rebuild the model from config.toml first. For a model a user
built in Python, `record_model` finds what to write there: the class (`type(model)`, by its
import name) and the values of its `__init__` arguments, read back from the instance (an
attribute of the same name, `_name`, or Lightning's `hparams`). Arguments that are modules
are recorded the same way, so `nn.Sequential(nn.Linear(64, 32), nn.ReLU())` records too. A
record is kept only when rebuilding from it gives the same state-dict keys and shapes.

Values in a record are what TOML can hold, plus these tables, each marked by one key:

    {"__module__": "pkg.mod:Class", "args": [...], "kwargs": {...}}  an object built by calling
                                                     the class (an nn.Module, or any class)
    {"__dataclass__": "pkg.mod:Config", "kwargs": {...}}  a dataclass instance (nanoGPT's config)
    {"__ref__": "pkg.mod:name"}                      the class or function itself, not called
    {"__none__": true}                               None, which TOML cannot write

Rebuilding imports what a record names and calls it; nothing is unpickled or evaluated.
A model hone cannot record (defined in `__main__` or a notebook, arguments it cannot find)
still trains: its run gets the `python` model family, whose build answers with the reason.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hone.config import ModelConfig, opt, register_model_config
from hone.errors import ConfigError
from hone.imports import import_target
from hone.models.base import MODELS, ModelSpec

MODULE_KEY = "__module__"
DATACLASS_KEY = "__dataclass__"
REF_KEY = "__ref__"
NONE_KEY = "__none__"
# Arguments that place or type the weights, not shape them: the loaded weights decide.
PLACEMENT_ARGUMENTS = frozenset({"device", "dtype"})
_MISSING = object()


@dataclass(frozen=True)
class ModelRecord:
    """How to rebuild a model: `target(*args, **kwargs)`, or why hone cannot."""

    target: str  # "package.module:Class" (or a factory function); "" when unknown
    args: list[Any] = field(default_factory=list)  # positional arguments (Sequential's layers)
    kwargs: dict[str, Any] = field(default_factory=dict)
    rebuildable: bool = True
    reason: str = ""  # one line when not rebuildable: why, and how to make it so


class _Unrecordable(Exception):
    """A model hone cannot record; the message is the record's reason."""


# ------------------------------------------------------------------------- recording
def record_model(model: nn.Module, explicit: Mapping[str, Any] | None = None) -> ModelRecord:
    """How to rebuild `model`, verified by rebuilding it; never raises for the user's model.

    `explicit` (else the model's own `hone_init` attribute) names the class or factory and
    its arguments instead of reading them off the model: {"target": "pkg.mod:build",
    "kwargs": {...}, "args": [...]}, a `[model]` table of the `custom` family being one.
    """
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper holds the model
    try:
        target, args, kwargs = _explicit(explicit) if explicit is not None else _call_of(model)
        _verify(model, target, args, kwargs)
    except _Unrecordable as e:
        return ModelRecord(_name_of(type(model)), rebuildable=False, reason=str(e))
    return ModelRecord(target, args, kwargs)


def model_config_section(record: ModelRecord) -> dict[str, Any]:
    """The `[model]` table a run writes for `record` (`ModelConfig(**section)` builds it):
    the `custom` family calling the recorded class, else the `python` family and the reason."""
    if not record.rebuildable:
        return {"name": "python", "reason": record.reason}
    return {
        "name": "custom",
        "target": record.target,
        "args": _for_toml(record.args),
        "kwargs": _for_toml(record.kwargs),
    }


def _explicit(given: Any) -> tuple[str, list[Any], dict[str, Any]]:
    target = given.get("target") if isinstance(given, Mapping) else None
    if not isinstance(target, str) or ":" not in target:
        raise _Unrecordable(
            f"hone_init must name the class or factory as {{'target': 'package.module:Class', "
            f"'kwargs': {{...}}}}, got target {target!r}"
        )
    args = [_value(v, f"hone_init args[{i}]") for i, v in enumerate(given.get("args") or [])]
    kwargs = {k: _value(v, f"hone_init kwargs[{k!r}]") for k, v in _kwargs(given).items()}
    return target, args, kwargs


def _kwargs(given: Mapping[str, Any]) -> dict[str, Any]:
    kwargs = given.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise _Unrecordable(f"hone_init kwargs must be a dict, got {kwargs!r}")
    return dict(kwargs)


def _call_of(obj: Any) -> tuple[str, list[Any], dict[str, Any]]:
    """(target, args, kwargs) of the call that built `obj`: its `hone_init` when it has one
    (a nested module may too), else read off the instance."""
    given = getattr(obj, "hone_init", None)
    if given is not None:
        return _explicit(given)
    cls = type(obj)
    target = _import_name(cls)
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):  # a class implemented in C without a signature
        raise _Unrecordable(f"{_hint(cls)}: hone cannot read its __init__ signature") from None
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    missing: list[str] = []
    for p in parameters:
        if p.kind is p.VAR_POSITIONAL:
            # Sequential's layers; other classes' *args are taken as empty (the rebuild tells).
            if isinstance(obj, nn.Sequential):
                args.extend(_value(m, f"{cls.__name__} layer") for m in obj.children())
            continue
        if p.kind is p.VAR_KEYWORD or p.name in PLACEMENT_ARGUMENTS:
            continue
        value = _argument(obj, p)
        if value is _MISSING:
            # torch's private arguments (Embedding's _weight) keep their defaults
            if p.default is p.empty or not p.name.startswith("_"):
                missing.append(p.name)
            continue
        encoded = _value(value, f"argument {p.name!r} of {cls.__name__}")
        if p.default is not p.empty and _same(encoded, p.default):
            continue  # defaults stay out: shorter configs, and no None for TOML
        if p.kind is p.POSITIONAL_ONLY:
            args.append(encoded)
        else:
            kwargs[p.name] = encoded
    if missing:
        names = ", ".join(missing)
        raise _Unrecordable(
            f"hone cannot find the value of {cls.__name__}'s __init__ argument(s) {names} on the "
            f"model; store each as an attribute of the same name in __init__ (self.{missing[0]} "
            f"= {missing[0]}), or set model.hone_init = {{'target': '{target}', 'kwargs': {{...}}}}"
        )
    return target, args, kwargs


def _argument(obj: Any, p: inspect.Parameter) -> Any:
    """The value `obj` was built with for parameter `p`, or _MISSING."""
    if isinstance(obj, nn.ModuleList) and p.name == "modules":
        return list(obj) or _MISSING
    if isinstance(obj, nn.ModuleDict) and p.name == "modules":
        return dict(obj.items()) or _MISSING
    value = _MISSING
    # A config argument is often kept under the other common spelling (`cfg` as self.config).
    aliases = {"cfg": ("config",), "config": ("cfg",)}.get(p.name, ())
    for name in (p.name, f"_{p.name}", *aliases):
        found = getattr(obj, name, _MISSING)
        if found is not _MISSING and not inspect.ismethod(found):
            value = found
            break
    hparams = getattr(obj, "hparams", None)  # Lightning's save_hyperparameters()
    if value is _MISSING and isinstance(hparams, Mapping):
        value = hparams.get(p.name, _MISSING)
    # A flag kept as the thing it switches on: nn.Linear(bias=False) leaves `bias` None.
    flag = isinstance(p.default, bool) or p.annotation in (bool, "bool")
    if flag and (value is None or isinstance(value, torch.Tensor | nn.Module)):
        return value is not None
    return value


def _value(value: Any, where: str) -> Any:
    """`value` as a record holds it; raises _Unrecordable for what TOML cannot hold."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor | nn.Parameter):
        raise _Unrecordable(
            f"{where} is a tensor, which hone does not write into config.toml; pass its size "
            f"instead, or set model.hone_init = {{'target': ..., 'kwargs': {{...}}}}"
        )
    if type(value).__module__ == "numpy":  # numpy scalars and arrays, as Python numbers
        return _value(value.tolist(), where)
    if isinstance(value, list | tuple):
        return [_value(v, where) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _value(v, where) for k, v in value.items()}
    if isinstance(value, nn.Module):
        target, args, kwargs = _call_of(value)
        return {MODULE_KEY: target, **({"args": args} if args else {}), "kwargs": kwargs}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = [f for f in dataclasses.fields(value) if f.init]
        kwargs = {f.name: _value(getattr(value, f.name), where) for f in fields}
        return {DATACLASS_KEY: _import_name(type(value)), "kwargs": kwargs}
    if inspect.isclass(value) or inspect.isfunction(value) or inspect.isbuiltin(value):
        return {REF_KEY: _import_name(value)}
    raise _Unrecordable(
        f"{where} is a {type(value).__name__}, which hone cannot write into config.toml; "
        f"set model.hone_init = {{'target': 'package.module:Class', 'kwargs': {{...}}}}"
    )


def _same(encoded: Any, default: Any) -> bool:
    try:
        return bool(encoded == _value(default, "default"))
    except _Unrecordable:
        return False


def _name_of(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', '?')}"


def _hint(cls: Any) -> str:
    return f"{cls.__name__} ({_name_of(cls)})"


def _import_name(obj: Any) -> str:
    """'package.module:Name' by which another process imports `obj`, or _Unrecordable."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    name = getattr(obj, "__name__", repr(obj))
    example = (
        f"config={{'model': {{'name': 'custom', 'target': 'pkg.mod:{name}', 'kwargs': {{...}}}}}}"
    )
    if module in ("__main__", "__mp_main__") or module is None:
        raise _Unrecordable(
            f"{name} is defined in __main__ (a notebook or script), which `hone` cannot import; "
            f"move it into a .py module next to your notebook and import it from there, or pass "
            f"{example}"
        )
    if "<locals>" in qualname:
        raise _Unrecordable(
            f"{name} is defined inside a function ({module}:{qualname}), which cannot be "
            f"imported; define it at the top level of {module}, or pass {example}"
        )
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is not obj:
        raise _Unrecordable(
            f"{name} cannot be imported as {module}:{qualname} (its module was not loaded by "
            f"that name); import it from a .py module on the path, or pass {example}"
        )
    return f"{module}:{qualname}"


# ------------------------------------------------------------------------ rebuilding
def build_recorded(target: str, args: list[Any], kwargs: dict[str, Any], key: str) -> Any:
    """Import `target` and call it with the decoded arguments (`key`: the config key, for
    errors). Nested records are built first; only what is reached by import is called."""
    factory = import_target(target, key)
    return factory(*decode(args, f"{key}.args"), **decode(kwargs, f"{key}.kwargs"))


def decode(value: Any, key: str) -> Any:
    """A recorded value as Python: nested records built, references imported, None back."""
    if isinstance(value, list):
        return [decode(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, Mapping):
        return value
    if NONE_KEY in value:
        return None
    if REF_KEY in value:
        return import_target(value[REF_KEY], f"{key}.{REF_KEY}")
    for marker in (MODULE_KEY, DATACLASS_KEY):
        if marker in value:
            path = f"{key}.{marker}"
            return build_recorded(
                value[marker], list(value.get("args", [])), dict(value.get("kwargs", {})), path
            )
    return {k: decode(v, f"{key}.{k}") for k, v in value.items()}


def _for_toml(value: Any) -> Any:
    """None written as {"__none__": true}: TOML has no null."""
    if value is None:
        return {NONE_KEY: True}
    if isinstance(value, list):
        return [_for_toml(v) for v in value]
    if isinstance(value, dict):
        return {k: _for_toml(v) for k, v in value.items()}
    return value


def _verify(model: nn.Module, target: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Rebuild from the record; its state dict must have the model's keys and shapes."""
    call = f"{target}({_shown(args, kwargs)})"
    # The user's RNG stream stays as it was: a rebuild on the CPU draws initial weights.
    with torch.random.fork_rng(devices=[]):
        try:
            rebuilt = _rebuild(target, args, kwargs)
        except Exception as e:  # the user's code: any error means the record is wrong
            message = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise _Unrecordable(
                f"rebuilding the model as {call} failed ({message}); "
                f"set model.hone_init = {{'target': ..., 'kwargs': {{...}}}} to say how to build it"
            ) from None
    if not isinstance(rebuilt, nn.Module):
        raise _Unrecordable(f"{call} gives a {type(rebuilt).__name__}, not a torch.nn.Module")
    want, got = _shapes(model), _shapes(rebuilt)
    if want != got:
        key = next(k for k in sorted(want.keys() | got.keys()) if want.get(k) != got.get(k))
        raise _Unrecordable(
            f"rebuilding the model as {call} gives other weights ({key}: "
            f"{_shape(got.get(key))} instead of {_shape(want.get(key))}); store each __init__ "
            f"argument as an attribute of the same name, or set model.hone_init = "
            f"{{'target': ..., 'kwargs': {{...}}}}"
        )


def _rebuild(target: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    # Modules first imported inside the meta device would create their globals there.
    for name in (target, *_targets(args), *_targets(kwargs)):
        import_target(name, "model.target")
    try:
        # On the meta device the rebuild allocates no memory, however large the model.
        with torch.device("meta"):
            return build_recorded(target, args, kwargs, "model.target")
    except Exception:  # code that needs real tensors in __init__ (.item(), numpy)
        return build_recorded(target, args, kwargs, "model.target")


def _targets(value: Any) -> list[str]:
    """Every class or function a recorded value names."""
    if isinstance(value, list):
        return [t for v in value for t in _targets(v)]
    if not isinstance(value, Mapping):
        return []
    own = [value[k] for k in (MODULE_KEY, DATACLASS_KEY, REF_KEY) if k in value]
    return own + [t for v in value.values() for t in _targets(v)]


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _shape(shape: tuple[int, ...] | None) -> str:
    return "absent" if shape is None else str(list(shape))


def _shown(args: list[Any], kwargs: dict[str, Any], limit: int = 120) -> str:
    """The arguments as a short call, for messages."""
    text = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------- the `python` model family
@register_model_config("python")
@dataclass
class PythonModelConfig:
    """`model.*` keys of a model handed in from Python that hone could not record."""

    reason: str = opt("", "why the run cannot rebuild its model, and how to make it rebuildable")


@MODELS.register("python")
def python_model(cfg: ModelConfig, spec: ModelSpec) -> nn.Module:
    """Refuses: the run records no way to build its model (only why)."""
    own: PythonModelConfig = cfg.arch
    raise ConfigError(
        "this run cannot rebuild its model, which was handed in from Python: "
        f"{own.reason or 'the run records no way to build it'}; to use this run, once the "
        "class can be imported, set name = 'custom', target and kwargs in the [model] table "
        "of its config.toml"
    )
