"""The config classes that components own, registered by the name that picks them.

Model families register theirs by `model.name` (`MODEL_FAMILIES`), optimizers by `optim.name`
(`OPTIMIZER_CONFIGS`), data sets by `data.name` (`DATA_SETS`); a section whose `name` picks a
component (`ModelConfig`, `OptimConfig`, `DataConfig`) derives from `ChosenComponent`, which
reads, writes and refuses the component's keys. The trainer's concerns (checkpointing, the NaN
guard, the profiler, sampling) register theirs as fixed parts of [train] (`TRAINER_PARTS`,
`SectionParts`). The applications above the config register whole top-level tables
(`register_section`: [tune], [federated], [lora]). Each kind is imported on its first lookup,
never by `import hone.config`.

A model family keeps its config dataclass next to its code (GPT's in `hone/models/gpt.py`) and
registers it here when its module is imported. The config package does not import the models
at its top (imports go downward only, and the models load torch); the first lookup of a
family's config imports `hone.models`, which registers the built-in families. A user's own
family registers its config the same way:

    @register_model_config("tiny")
    @dataclass
    class TinyConfig:
        width: int = opt(8, "units of the hidden layer", ge=1)

A family config may define `validate(self) -> None` for its cross-field rules (raising a
`ConfigError` that names the flag), and `context_length` (tokens per training window) when
it is a language model.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, cast

from hone.config.fields import field_default
from hone.errors import ConfigError
from hone.registry import Registry

T = TypeVar("T")


@dataclasses.dataclass
class NoFields:
    """The config of a component without settings of its own (linear, logistic, gd)."""


NoModelFields = NoFields  # the name model families know it by


class ComponentConfigs:
    """The config classes of one kind of component, by the name that picks one (`model.name`).

    `load` imports the package whose modules register the built-in components; it runs on the
    first lookup, a lazy import: the components live above the config (imports go downward),
    and they load torch.
    """

    def __init__(self, section: str, kind: str, load: Callable[[], None]) -> None:
        self.section = section  # the config table: "model", "optim"
        self.registry: Registry[type] = Registry(f"{kind} config", f"{section}.name")
        self._load = load

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: `cls` holds the settings of the component `name`."""

        def decorator(cls: type[T]) -> type[T]:
            assert dataclasses.is_dataclass(cls), (
                f"the config of {self.section}.name = {name!r} must be a dataclass"
            )
            self.registry.add(name, cls)
            return cls

        return decorator

    def config_class(self, name: str) -> type:
        """The config class of component `name`; one that registered none has no fields."""
        self._load()
        return self.registry.get(name) if name in self.registry else NoFields

    def part(self, name: str) -> type:
        """The config class registered as `name`, which must be (a fixed part of a section)."""
        self._load()
        return self.registry.get(name)

    def classes(self) -> dict[str, type]:
        """Every registered component's config class, by name (sorted)."""
        self._load()
        return {name: self.registry.get(name) for name in self.registry}

    def owners(self, key: str) -> list[str]:
        """The registered components that own the field `key`, sorted."""
        return [name for name, cls in self.classes().items() if key in field_names(cls)]

    def not_applicable(self, key: str, name: str) -> str:
        """The one-line answer to a `<section>.<key>` that the component `name` does not have.

        Empty when no component owns `key` (then it is simply unknown).
        """
        owners = self.owners(key)
        if not owners:
            return ""
        quoted = [repr(owner) for owner in owners]
        which = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        section = self.section
        fix = (
            f"--{section}.name={owners[0]}"
            if len(owners) == 1
            else f"--{section}.name to one of them"
        )
        return f"{section}.{key} applies to {section}.name = {which}, not to {name!r}; remove it or set {fix}"


def _register_builtin_families() -> None:
    # A lazy import, the one upward edge: the built-in families live above the config.
    import hone.models  # noqa: F401
    import hone.pretrained.model  # noqa: F401  (model.name = "pretrained": a checkpoint)


def _register_builtin_optimizers() -> None:
    import hone.optim  # noqa: F401


def _register_builtin_data_sets() -> None:
    import hone.data  # noqa: F401
    import hone.finetune.chat_data  # noqa: F401  (data.name = "chat": fine-tuning records)


def _register_trainer_parts() -> None:
    # The modules of the engine that read them; importing one loads the engine (and torch).
    import hone.engine.checkpointing
    import hone.engine.guard
    import hone.engine.language_task
    import hone.engine.profiling  # noqa: F401


MODEL_FAMILIES = ComponentConfigs("model", "model", _register_builtin_families)
MODEL_CONFIGS = MODEL_FAMILIES.registry
OPTIMIZER_CONFIGS = ComponentConfigs("optim", "optimizer", _register_builtin_optimizers)
register_optim_config = OPTIMIZER_CONFIGS.register
DATA_SETS = ComponentConfigs("data", "data set", _register_builtin_data_sets)
register_data_config = DATA_SETS.register
TRAINER_PARTS = ComponentConfigs("train", "trainer part", _register_trainer_parts)
register_train_part = TRAINER_PARTS.register


def register_model_config(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: `cls` holds the settings of the model family `name`."""
    return MODEL_FAMILIES.register(name)


def model_config_class(name: str) -> type:
    """The config class of model family `name`; a family that registered none has no fields."""
    return MODEL_FAMILIES.config_class(name)


def model_config_classes() -> dict[str, type]:
    """Every registered family's config class, by name (sorted)."""
    return MODEL_FAMILIES.classes()


def field_names(config: Any) -> set[str]:
    """The field names of a component config (a class or an instance)."""
    return {f.name for f in dataclasses.fields(config)}


def families_with_key(key: str) -> list[str]:
    """The registered families that own the field `key`, sorted."""
    return MODEL_FAMILIES.owners(key)


def not_applicable(key: str, name: str) -> str:
    """The one-line answer to a `model.<key>` that the family `name` does not have."""
    return MODEL_FAMILIES.not_applicable(key, name)


class FlatSection:
    """Base of a config section whose flattened fields hold its components' configs.

    A flattened field (metadata `flatten`: `ModelConfig.arch`, `TrainConfig.checkpointing`)
    holds a config dataclass that a component above the config owns. Its fields read and write
    as if they were the section's own (`cfg.train.keep_best`), take keywords in the
    constructor (`TrainConfig(keep_best=True)`, `dataclasses.replace`), and are written flat
    into the section's table, so `--train.keep_best=true` names them. A key that none of them
    has is refused in one line. `_part_class` says which class a flattened field holds.
    """

    def __init__(self, **values: Any) -> None:
        """Own and components' fields as keywords: OptimConfig(name="sgd", momentum=0.9)."""
        flat = flattened(self)
        given = {name: values.pop(name, None) for name in flat}
        for f in dataclasses.fields(cast(Any, self)):
            if f.name not in flat:
                value = values.pop(f.name) if f.name in values else field_default(f)
                object.__setattr__(self, f.name, value)
        for name in flat:  # the own fields first: a chosen component's class needs the name
            config = self._part_class(name)
            mine = {key: values.pop(key) for key in field_names(config) if key in values}
            object.__setattr__(self, name, _part(config, given[name], mine))
        if values:
            raise ConfigError(self._refusal(next(iter(values))))

    def _part_class(self, name: str) -> type:
        """The config class the flattened field `name` holds."""
        raise NotImplementedError

    @classmethod
    def part_classes(cls) -> list[type]:
        """Every class a flattened field of this section may hold (whose keys it accepts)."""
        raise NotImplementedError

    def _refusal(self, key: str) -> str:
        """The one-line answer to a key that none of the section's configs has."""
        raise NotImplementedError

    def _parts(self) -> list[Any]:
        # Read from __dict__ so that copy and pickle, which probe a bare instance, get an
        # AttributeError instead of a recursion.
        return [self.__dict__.get(name) for name in flattened(self)]

    def __getattr__(self, key: str) -> Any:
        # Called only when normal lookup fails: the components' fields read through.
        parts = self._parts()
        if key.startswith("__") or any(part is None for part in parts):
            raise AttributeError(key)
        for part in parts:
            if key in field_names(part):
                return getattr(part, key)
        raise AttributeError(self._refusal(key))

    def __setattr__(self, key: str, value: Any) -> None:
        if key in field_names(cast(Any, self)):
            object.__setattr__(self, key, value)
            self._changed(key)
            return
        for part in self._parts():
            if key in field_names(part):
                setattr(part, key, value)
                return
        raise AttributeError(self._refusal(key))

    def _changed(self, key: str) -> None:
        """Called after the section's own field `key` was set."""


def part_field(help_text: str) -> Any:
    """A flattened field of a section of fixed parts, built by the section's constructor."""
    return dataclasses.field(default=None, metadata={"flatten": True, "help": help_text})


def flattened(config: Any) -> list[str]:
    """The names of the flattened fields of a section (a class or an instance)."""
    return [f.name for f in dataclasses.fields(config) if f.metadata.get("flatten")]


def _part(config: type, given: Any, values: dict[str, Any]) -> Any:
    """An instance of `config` with `values` over those of `given` (None, one of its own, or
    another component's config, whose fields both have are kept)."""
    if given is None:
        return config(**values)
    if type(given) is config:
        return dataclasses.replace(cast(Any, given), **values)
    kept = {key: getattr(given, key) for key in field_names(config) & field_names(given)}
    return config(**{**kept, **values})


class ChosenComponent(FlatSection):
    """Base of a config section whose `name` picks a component that owns its other keys.

    The section declares its common fields and one flattened field (named by `own`:
    `ModelConfig.arch`, `OptimConfig.options`, `DataConfig.options`) holding the chosen
    component's config (see FlatSection). A field of another component is refused with one
    line naming who owns it. Setting `name` switches to the new component's config, keeping
    the values of the fields both components have.
    """

    components: ClassVar[ComponentConfigs]
    own: ClassVar[str]
    name: str

    def _part_class(self, name: str) -> type:
        assert name == self.own, (name, self.own)
        return self.components.config_class(self.name)

    @classmethod
    def part_classes(cls) -> list[type]:
        return list(cls.components.classes().values())

    def _changed(self, key: str) -> None:
        if key == "name":
            current = self.__dict__[self.own]
            object.__setattr__(self, self.own, _part(self._part_class(self.own), current, {}))

    def _refusal(self, key: str) -> str:
        section = self.components.section
        return self.components.not_applicable(key, self.name) or (
            f"unknown config key '{section}.{key}'; see `hone config keys` for every key"
        )


class SectionParts(FlatSection):
    """Base of a section made of its own fields and fixed parts that components own.

    `[train]` holds the checkpointing, NaN guard, profiler and sampling settings, each a
    dataclass next to the engine code that reads it, registered in `parts` by the name of the
    flattened field that holds it (`checkpointing`). Their keys sit flat in the table.
    """

    parts: ClassVar[ComponentConfigs]

    def _part_class(self, name: str) -> type:
        return self.parts.part(name)

    @classmethod
    def part_classes(cls) -> list[type]:
        return [cls.parts.part(name) for name in flattened(cls)]

    def _refusal(self, key: str) -> str:
        return (
            f"unknown config key '{self.parts.section}.{key}'; see `hone config keys` for every key"
        )


# Top-level sections that the applications above the config own ([tune], [federated]): each
# registers its dataclass from its own package, imported on the first lookup.
SECTIONS: Registry[type] = Registry("config section", "section")


def register_section(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: `cls` is the config of the top-level table `[name]`."""

    def decorator(cls: type[T]) -> type[T]:
        assert dataclasses.is_dataclass(cls), f"the config of [{name}] must be a dataclass"
        SECTIONS.add(name, cls)
        return cls

    return decorator


def _register_builtin_sections() -> None:
    # Lazy imports, upward: the applications register their sections (light modules that
    # import no torch, nor the rest of their package).
    import hone.federate.settings  # noqa: F401
    import hone.finetune.settings  # noqa: F401
    import hone.tune.settings  # noqa: F401


def section_class(name: str) -> type:
    """The config class of the top-level table `[name]` (tune, federated)."""
    _register_builtin_sections()
    return SECTIONS.get(name)


def section_factory(name: str) -> Callable[[], Any]:
    """The default factory of a Config field whose class a package above registers."""
    return lambda: section_class(name)()


def type_hints(cls: Any) -> dict[str, Any]:
    """`typing.get_type_hints(cls)`, resolving the names of the registered sections' classes
    (which the schema imports only for type checkers)."""
    _register_builtin_sections()
    names = {SECTIONS.get(name).__name__: SECTIONS.get(name) for name in SECTIONS}
    return typing.get_type_hints(cls, localns=names)
