"""Golden configs: every recipe and example TOML resolves to the values it resolved to before.

`tests/config_golden/` holds the output of `hone config show` for each built-in recipe
(`<recipe>.toml`) and each TOML file under examples/ (`examples/<path>`), written when the
config tree was reorganized (issue 25: components owning their sections). A change of the
schema that moves a key must not change what any of them resolves to. The tables are compared
as parsed dicts: the order of keys may change, their values may not. One kind of key may
leave a table: a key of a section whose `name` picks a component (model, optim) that belongs to
another component (`optim.momentum` of an adamw config), left at its default: it never did
anything, and `hone config show` now lists only the chosen component's keys.

A key added, renamed or re-defaulted on purpose: regenerate the files and review the diff,

    HONE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_config_golden.py
"""

from __future__ import annotations

import argparse
import io
import os
import tomllib
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from hone.cli import commands
from hone.config import field_help, load_config, recipe_names, to_dict, to_toml
from hone.config.sources import chosen_sections
from hone.config.step_bound import MAX_STEPS_ENV

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "config_golden"
UPDATE_ENV = "HONE_UPDATE_GOLDEN"


def _sources() -> dict[str, str]:
    """golden file name -> what `hone config show` is given (a recipe name or a TOML path)."""
    sources = {f"{name}.toml": name for name in recipe_names()}
    for path in sorted((ROOT / "examples").rglob("*.toml")):
        relative = path.relative_to(ROOT).as_posix()
        sources[relative] = relative
    return sources


SOURCES = _sources()


def config_show(source: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """What `hone config show SOURCE` prints, run through the command itself."""
    monkeypatch.delenv(MAX_STEPS_ENV, raising=False)  # it lowers max_steps as a config loads
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    with redirect_stdout(out):
        assert commands.config_show(argparse.Namespace(config=source, overrides=[])) == 0
    return out.getvalue()


@pytest.mark.parametrize("golden", sorted(SOURCES))
def test_config_show_resolves_as_before(golden: str, monkeypatch: pytest.MonkeyPatch) -> None:
    shown = config_show(SOURCES[golden], monkeypatch)
    path = GOLDEN / golden
    if os.environ.get(UPDATE_ENV) == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(shown)
    assert path.is_file(), f"no golden file {path}; write it with {UPDATE_ENV}=1"
    now, before = tomllib.loads(shown), tomllib.loads(path.read_text())
    for section, table in before.items():
        if isinstance(table, dict):
            for key in set(table) - set(now.get(section, {})):
                assert_belongs_to_another_component(section, key, table, now)
                del table[key]
    assert now == before, (
        f"`hone config show {SOURCES[golden]}` resolves differently from {path}; if the change "
        f"is meant, rerun with {UPDATE_ENV}=1 and review the diff"
    )


def assert_belongs_to_another_component(section: str, key: str, before: dict, now: dict) -> None:
    """A key that left `[section]`: one of another component's, at its default."""
    name = now[section]["name"]
    assert section in chosen_sections(), f"{section}.{key} is gone from the resolved config"
    owners = chosen_sections()[section].components.owners(key)
    assert owners and name not in owners, f"{section}.{key} is gone, yet {name!r} owns it"
    defaults = [default for row_key, default, _ in field_help() if row_key == f"{section}.{key}"]
    assert before[key] in defaults, f"{section}.{key} = {before[key]!r} was set, and is gone"


@pytest.mark.parametrize("golden", sorted(SOURCES))
def test_config_show_output_loads_back_to_the_same_config(
    golden: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = config_show(SOURCES[golden], monkeypatch)
    written = tmp_path / "shown.toml"
    written.write_text(shown)
    again = load_config(str(written))
    assert to_dict(again) == tomllib.loads(shown)
    assert again == load_config(SOURCES[golden])
    assert to_toml(again) == shown


def test_every_recipe_and_example_has_a_golden_file() -> None:
    written = {p.relative_to(GOLDEN).as_posix() for p in GOLDEN.rglob("*.toml")}
    assert written == set(SOURCES), f"stale or missing golden files; rerun with {UPDATE_ENV}=1"
