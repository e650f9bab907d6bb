"""Import user code named in a config as 'package.module:attribute', and record where it was.

The `hone` console script, unlike `python -m`, does not put the working directory on the
import path, and a config file's own folder is on it in no case. So the module of a target
(`model.target = "mymodels:build"`) is looked for in these folders first, in order:

1. the folder a loaded run recorded for it (RUN/imports.json): the code the run trained with,
   so `hone eval RUN` works from any folder;
2. the folder of each config file read (the file that names the target, then its bases);
3. the working directory;

and then on `sys.path` as any import (installed packages, PYTHONPATH). Reading a config feeds
1 and 2 (`hone.config.sources`), so every command, and every worker process that loads the
same config or run, resolves a target the same way. The trainer writes `import_record` into
the run directory.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from hone.errors import ConfigError


class ImportPath:
    """The folders searched for user modules before `sys.path`, in this process."""

    def __init__(self) -> None:
        self.config_folders: list[Path] = []
        # top-level module name -> its entry in a loaded run's imports.json
        self.recorded: dict[str, dict[str, Any]] = {}

    def add_config_folder(self, folder: str | Path) -> None:
        """Search the folder of a config file that was read (once; earlier ones first)."""
        path = Path(folder).resolve()
        if path not in self.config_folders:
            self.config_folders.append(path)

    def add_record(self, record: Mapping[str, Any]) -> None:
        """Search the folders a run recorded (the contents of RUN/imports.json) first."""
        for entry in record.values():
            if entry.get("folder") and entry.get("file"):
                self.recorded[_top(entry["module"])] = dict(entry)

    def candidates(self, module: str) -> list[Path]:
        """Where `module`'s top-level package is looked for, in order."""
        top = _top(module)
        found = [Path(self.recorded[top]["folder"])] if top in self.recorded else []
        for folder in (*self.config_folders, Path.cwd()):
            if folder not in found:
                found.append(folder)
        return found


SEARCH = ImportPath()


def _top(module: str) -> str:
    return module.partition(".")[0]


def _find_folder(module: str) -> Path | None:
    """The first searched folder that holds `module`'s top-level package or file."""
    for folder in SEARCH.candidates(module):
        if importlib.machinery.PathFinder.find_spec(_top(module), [str(folder)]) is not None:
            return folder
    return None


def import_module(module_name: str, key: str, target: str) -> Any:
    """Import a user module from the searched folders, else from `sys.path`.

    The folder it is found in goes first on `sys.path` while the module is imported, as
    `python -m` would put it, and stays at the end of `sys.path` afterwards: imports the
    module makes later (its siblings, or pickled references in spawned processes) still
    resolve, and its files never shadow an installed package that hone imports later.
    """
    folder = None if _top(module_name) in sys.modules else _find_folder(module_name)
    entry = str(folder) if folder is not None else ""
    added = bool(entry) and entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(_not_found(module_name, key, target, folder, e)) from None
    finally:
        if added:
            sys.path.remove(entry)
            sys.path.append(entry)


def _not_found(module: str, key: str, target: str, folder: Path | None, e: ImportError) -> str:
    """One line: what was searched, and which folder to add to the path."""
    missing = getattr(e, "name", None)
    if folder is not None or (missing and not module.startswith(missing)):
        # The module was found, but something it imports was not.
        where = f" from {folder}" if folder is not None else ""
        return f"{key} = {target!r}: importing {module!r}{where} failed: {e}"
    top = _top(module)
    recorded = SEARCH.recorded.get(top)
    if recorded is not None:
        file = Path(recorded["file"])
        holder = (
            file.relative_to(recorded["folder"])
            if file.is_relative_to(recorded["folder"])
            else file.name
        )
        return (
            f"{key} = {target!r}: cannot import {module!r}: the run imported it from {file}, "
            f"which is gone; add the folder that now holds {holder} to the path: "
            f"PYTHONPATH=/path/to/that/folder hone ..."
        )
    searched = ", ".join(str(f) for f in SEARCH.candidates(module))
    return (
        f"{key} = {target!r}: cannot import {module!r} ({e}); searched {searched} and sys.path; "
        f"run hone from the folder that holds {top}.py (or {top}/), or add that folder to the "
        f"path: PYTHONPATH=/path/to/that/folder hone ..."
    )


def import_target(target: str, key: str) -> Callable[..., Any]:
    """Import 'package.module:attribute', with errors that name the config key to fix."""
    module_name, _, attr = target.partition(":")
    found = import_module(module_name, key, target)
    for part in attr.split("."):  # a nested class: 'package.module:Outer.Inner'
        if not part or not hasattr(found, part):
            raise ConfigError(
                f"{key} = {target!r}: module {module_name!r} has no attribute {attr!r}; write it as package.module:factory"
            )
        found = getattr(found, part)
    return found


def _targets(table: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(key, 'module:attr') for every `target` (or `*_target`) string of a config dict, and
    every class a recorded model names in its arguments ('__module__' and the like, in lists
    too: hone.models.recorded)."""
    for key, value in table.items():
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for i, item in items:
            path = f"{prefix}{key}" if i is None else f"{prefix}{key}[{i}]"
            if isinstance(item, Mapping):
                yield from _targets(item, f"{path}.")
            elif _names_target(key) and isinstance(item, str) and ":" in item:
                yield path, item


def _names_target(key: str) -> bool:
    return key.endswith("target") or (key.startswith("__") and key.endswith("__"))


def import_record(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Where each target of `config` (a config as plain dicts) was imported from.

    {"model.target": {"target": "mymodels:build", "module": "mymodels", "folder": "/proj",
    "file": "/proj/mymodels.py"}}; a target whose module was not imported is left out.
    """
    record: dict[str, dict[str, Any]] = {}
    for key, target in _targets(config):
        name = target.partition(":")[0]
        module = sys.modules.get(name)
        if module is None:
            continue
        file = getattr(module, "__file__", None)
        folder = None
        if file:
            # /proj/pkg/sub.py for pkg.sub, /proj/pkg/__init__.py for pkg: /proj either way
            path = Path(file).resolve()
            depth = name.count(".") + (2 if path.stem == "__init__" else 1)
            folder = str(path.parents[depth - 1])
        record[key] = {"target": target, "module": name, "folder": folder, "file": file}
    return record
