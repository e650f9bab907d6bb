"""Where a config's raw settings come from: a built-in recipe or a TOML file, and its bases.

A file may build on another: `base = "mlp-digits"` (a recipe name, or a path relative to the
file's folder) and then set only what differs. Bases chain; a cycle or a missing base is a
ConfigError. Reading a file also tells `hone.imports` where user modules may live: the
file's folder, and for a run's config.toml the folders its imports.json recorded.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import tomllib
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from hone.config.components import ChosenComponent, FlatSection, field_names, type_hints
from hone.config.schema import Config
from hone.errors import ConfigError, did_you_mean
from hone.imports import SEARCH
from hone.run_files import CONFIG, DATA_INFO, IMPORTS

RECIPE_PACKAGE = "hone.recipes"
BASE_KEY = "base"  # top-level key: the recipe or file this one builds on
# Top-level keys that describe a file itself, so they are never taken from its base.
OWN_KEYS = ("recipe", "description")


def recipe_names() -> list[str]:
    """Names of the built-in recipes, sorted."""
    folder = resources.files(RECIPE_PACKAGE)
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def recipe_text(name: str) -> str:
    return resources.files(RECIPE_PACKAGE).joinpath(f"{name}.toml").read_text()


@dataclass(frozen=True)
class _Source:
    """One config file or recipe, located but not yet parsed."""

    label: str  # how messages name it: the path as given, or the recipe's name
    identity: str  # the same file under any spelling, for finding a cycle of bases
    name: str  # the recipe name it implies: the recipe's, or the file's stem
    folder: Path  # where its relative bases are looked up
    text: str
    is_recipe: bool


def _recipe_folder() -> Path:
    return Path(str(resources.files(RECIPE_PACKAGE)))


def _shown(path: Path) -> str:
    """A path as messages show it: relative to the working directory, or absolute if shorter."""
    relative = os.path.relpath(path)
    return relative if len(relative) <= len(str(path)) else str(path)


def _locate(ref: str, folder: Path | None, named_by: str = "") -> _Source:
    """The recipe or file `ref` names; relative to `folder` when another file names it."""
    path = folder / ref if folder is not None else Path(ref)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            if named_by:
                raise ConfigError(
                    f"{named_by}: base = {ref!r}: {_shown(path.absolute())} does not exist; name a recipe listed by "
                    f"`hone recipes` or a TOML file (a path relative to the folder of {named_by})"
                )
            raise ConfigError(
                f"config file {ref} does not exist; pass a TOML file or one of the recipes listed by `hone recipes`"
            )
        resolved = path.resolve()
        is_recipe = resolved.parent == _recipe_folder().resolve()
        label = _shown(resolved) if named_by else ref
        return _Source(
            label, str(resolved), path.stem, resolved.parent, path.read_text(), is_recipe
        )
    if ref in recipe_names():
        identity = str((_recipe_folder() / f"{ref}.toml").resolve())
        return _Source(ref, identity, ref, _recipe_folder(), recipe_text(ref), True)
    if named_by:
        raise ConfigError(
            f"{named_by}: base = {ref!r} is neither a recipe nor a file{did_you_mean(ref, recipe_names())}; "
            f"use one of: {', '.join(recipe_names())}, or a path relative to the folder of {named_by}"
        )
    raise ConfigError(
        f"no recipe or config file named {ref!r}{did_you_mean(ref, recipe_names())}; "
        f"use one of: {', '.join(recipe_names())}, or a path to a .toml file"
    )


def _parse(source: _Source) -> dict[str, Any]:
    try:
        return tomllib.loads(source.text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source.label} is not valid TOML: {e}") from None


def _compose(source: _Source, chain: tuple[_Source, ...] = ()) -> dict[str, Any]:
    """The raw dict of `source` with its bases merged in, nearest base last."""
    raw = _parse(source)
    if not source.is_recipe:  # user modules may sit beside the config that names them
        SEARCH.add_config_folder(source.folder)
        record = source.folder / IMPORTS  # a run's config.toml: where its modules came from
        if record.is_file():
            SEARCH.add_record(json.loads(record.read_text()))
        if source.label.endswith(CONFIG) and (source.folder / DATA_INFO).is_file():
            raw = _own_keys_only(raw)
    if BASE_KEY not in raw:
        return raw
    ref = raw.pop(BASE_KEY)
    if not isinstance(ref, str) or not ref:
        raise ConfigError(
            f"{source.label}: base must be a recipe name or a path to a TOML file, got {ref!r}"
        )
    base = _locate(ref, source.folder, source.label)
    seen = (*chain, source)
    if any(s.identity == base.identity for s in seen):
        names = " -> ".join(s.label for s in (*seen, base))
        raise ConfigError(f"bases form a cycle: {names}; remove one of these base keys")
    return merge_configs(_compose(base, seen), raw)


def read_source(source: str) -> tuple[dict[str, Any], str]:
    """Return the raw dict of a recipe name or TOML path, with its bases merged in, and the
    recipe name it implies."""
    found = _locate(source, None)
    return _compose(found), found.name


def merge_configs(base: dict[str, Any], child: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`child`'s settings over `base`'s (raw dicts).

    Tables merge key by key; a value, a list and a free-form table (`tune.space`,
    `model.kwargs`, `data.kwargs`) replace the base's whole, so a file's own search space is
    not mixed with its base's. `recipe` and `description` describe a file and are not
    inherited. A `model.name` (or `optim.name`) other than the base's keeps only the base's
    keys that the new component also has, as `--model.name` does on the command line.
    """
    out = {k: copy.deepcopy(v) for k, v in base.items() if prefix or k not in OWN_KEYS}
    for section, cls in chosen_sections().items() if not prefix else ():
        table, new_table = out.get(section), child.get(section)
        if isinstance(table, dict) and isinstance(new_table, dict):
            if isinstance(new_table.get("name"), str):
                out[section] = component_table(cls, table, new_table["name"])
    for key, value in child.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not _free_form(path):
            out[key] = merge_configs(out[key], value, f"{path}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def _own_keys_only(raw: dict[str, Any]) -> dict[str, Any]:
    """A run's own config.toml, read again: hone wrote every key it had, and a run written
    before each data set and optimizer owned its keys holds all of theirs, which that run never
    read. They are dropped here, so old runs still load, while a user's file that sets a key
    its data set does not have is still refused."""
    for section, cls in chosen_sections().items():
        table = raw.get(section)
        if isinstance(table, dict):
            name = table.get("name", cls.name)
            if isinstance(name, str) and name in cls.components.classes():
                keep = field_names(cls) | field_names(cls.components.config_class(name))
                raw[section] = {k: v for k, v in table.items() if k in keep}
    return raw


def _free_form(path: str) -> bool:
    """Whether `path` (section.key) is a free-form table, a dict field such as tune.space,
    rather than a table of settings; any component's field counts under `model`, `data`..."""
    section, _, key = path.partition(".")
    cls = type_hints(Config).get(section)
    if not key or "." in key or not dataclasses.is_dataclass(cls):
        return False
    tables: list[Any] = [cls]
    if isinstance(cls, type) and issubclass(cls, FlatSection):
        tables += cls.part_classes()
    return any(typing.get_origin(type_hints(t).get(key)) is dict for t in tables)


def chosen_sections() -> dict[str, type[ChosenComponent]]:
    """The sections whose `name` picks a component that owns their other keys (model, optim)."""
    return {
        section: cls
        for section, cls in type_hints(Config).items()
        if isinstance(cls, type) and issubclass(cls, ChosenComponent)
    }


def component_table(cls: type[ChosenComponent], table: dict[str, Any], name: str) -> dict[str, Any]:
    """A raw table of section `cls` (e.g. [model]) switched to component `name`: the keys that
    component does not have are dropped (none when it already is that component)."""
    if table.get("name", cls.name) == name:
        return table
    keep = field_names(cls) | field_names(cls.components.config_class(name))
    return {k: v for k, v in table.items() if k in keep}
