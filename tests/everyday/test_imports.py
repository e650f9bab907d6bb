"""Where `model.target`/`data.target` modules are found, and what a run records of them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hone import imports
from hone.errors import ConfigError
from hone.imports import ImportPath, import_record, import_target

MODULE = "hone_everyday_user_module"  # a name no other test imports


@pytest.fixture
def search(monkeypatch: pytest.MonkeyPatch) -> Iterator[ImportPath]:
    """A fresh search path; sys.path and the imported test module are put back afterwards."""
    fresh = ImportPath()
    monkeypatch.setattr(imports, "SEARCH", fresh)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield fresh
    sys.modules.pop(MODULE, None)


def user_module(folder: Path, value: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{MODULE}.py").write_text(f"def build():\n    return {value}\n")
    return folder


def test_the_config_folder_is_searched_before_the_working_directory(
    search: ImportPath, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(user_module(tmp_path / "cwd", 1))
    search.add_config_folder(user_module(tmp_path / "configs", 2))
    assert import_target(f"{MODULE}:build", "model.target")() == 2
    # the folder stays on the path, last: the module's own later imports still resolve
    assert sys.path[-1] == str((tmp_path / "configs").resolve())


def test_the_working_directory_is_searched(
    search: ImportPath, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(user_module(tmp_path / "cwd", 1))
    assert import_target(f"{MODULE}:build", "data.target")() == 1


def test_a_recorded_folder_comes_first(search: ImportPath, tmp_path: Path) -> None:
    search.add_config_folder(user_module(tmp_path / "configs", 2))
    recorded = user_module(tmp_path / "recorded", 3)
    file = str(recorded / f"{MODULE}.py")
    search.add_record({"model.target": {"module": MODULE, "folder": str(recorded), "file": file}})
    assert search.candidates(MODULE)[:2] == [recorded, (tmp_path / "configs").resolve()]
    assert import_target(f"{MODULE}:build", "model.target")() == 3


def test_not_found_is_one_line_naming_the_searched_folders(
    search: ImportPath, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        import_target(f"{MODULE}:build", "model.target")
    message = str(e.value)
    assert "\n" not in message and str(tmp_path) in message
    assert f"{MODULE}.py" in message and "PYTHONPATH=" in message


def test_a_broken_import_inside_the_module_names_what_is_missing(
    search: ImportPath, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / f"{MODULE}.py").write_text("import no_such_dependency_here\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="no_such_dependency_here"):
        import_target(f"{MODULE}:build", "model.target")


def test_the_record_names_each_target_s_folder_and_file() -> None:
    import tests.contracts.user_model  # noqa: F401  (a module under the repository root)

    config = {
        "model": {"name": "custom", "target": "tests.contracts.user_model:factory"},
        "data": {"name": "digits", "target": "not_imported:load"},
    }
    record = import_record(config)
    assert list(record) == ["model.target"]  # a target whose module was never imported: none
    entry = record["model.target"]
    root = Path(__file__).resolve().parents[2]
    assert entry["folder"] == str(root) and entry["module"] == "tests.contracts.user_model"
    assert entry["file"].endswith("user_model.py")
