"""The config classes that components own, registered by the name that picks them.

Model families register theirs by `model.name` (`MODEL_FAMILIES`), optimizers by `optim.name`
(`OPTIMIZER_CONFIGS`); a section whose `name` picks a component (`ModelConfig`, `OptimConfig`)
derives from `ChosenComponent`, which reads, writes and refuses the component's keys. The
applications above the config register whole top-level tables (`register_section`: [tune],
[federated]). Each kind is imported on its first lookup, never by `import hone.config`.

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


def _register_builtin_optimizers() -> None:
    import hone.optim  # noqa: F401


MODEL_FAMILIES = ComponentConfigs("model", "model", _register_builtin_families)
MODEL_CONFIGS = MODEL_FAMILIES.registry
OPTIMIZER_CONFIGS = ComponentConfigs("optim", "optimizer", _register_builtin_optimizers)
register_optim_config = OPTIMIZER_CONFIGS.register


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


class ChosenComponent:
    """Base of a config section whose `name` picks a component that owns its other keys.

    The section declares its common fields and one flattened field (named by `own`:
    `ModelConfig.arch`, `OptimConfig.options`) holding the chosen component's config. Those
    fields read and write as if they were the section's own (`cfg.optim.momentum`), and are
    written flat into the section's table, so `--optim.momentum=0.9` names them. A field of
    another component is refused with one line naming who owns it. Setting `name` switches to
    the new component's config, keeping the values of the fields both components have.
    """

    components: ClassVar[ComponentConfigs]
    own: ClassVar[str]
    name: str

    def __init__(self, **values: Any) -> None:
        """Common and component fields as keywords: OptimConfig(name="sgd", momentum=0.9)."""
        given: Any = values.pop(self.own, None)
        for f in dataclasses.fields(cast(Any, self)):
            if f.name != self.own:
                value = values.pop(f.name) if f.name in values else field_default(f)
                object.__setattr__(self, f.name, value)
        config = self.components.config_class(self.name)
        for key in values:
            if key not in field_names(config):
                raise ConfigError(self._refusal(key))
        if given is None:
            given = config(**values)
        elif type(given) is config:
            given = dataclasses.replace(cast(Any, given), **values)
        else:  # another component's (dataclasses.replace with a new name): keep what both have
            kept = {key: getattr(given, key) for key in field_names(config) & field_names(given)}
            given = config(**{**kept, **values})
        object.__setattr__(self, self.own, given)

    def __getattr__(self, key: str) -> Any:
        # Called only when normal lookup fails: the component's fields read through. Its
        # config is read from __dict__ so that copy and pickle, which probe a bare instance,
        # get an AttributeError instead of a recursion.
        own = self.__dict__.get(self.own)
        if own is None or key.startswith("__"):
            raise AttributeError(key)
        if key in field_names(own):
            return getattr(own, key)
        raise AttributeError(self._refusal(key))

    def __setattr__(self, key: str, value: Any) -> None:
        if key in field_names(cast(Any, self)):
            object.__setattr__(self, key, value)
            if key == "name":
                self._switch_component()
        elif key in field_names(self.__dict__[self.own]):
            setattr(self.__dict__[self.own], key, value)
        else:
            raise AttributeError(self._refusal(key))

    def _switch_component(self) -> None:
        config = self.components.config_class(self.name)
        current = self.__dict__[self.own]
        if type(current) is not config:
            kept = {
                key: getattr(current, key) for key in field_names(config) & field_names(current)
            }
            object.__setattr__(self, self.own, config(**kept))

    def _refusal(self, key: str) -> str:
        section = self.components.section
        return self.components.not_applicable(key, self.name) or (
            f"unknown config key '{section}.{key}'; see `hone config keys` for every key"
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
