"""One table of exit codes: README.md's agrees with `hone.errors.ExitCode`, and every code an
error or a signal carries is in it."""

from __future__ import annotations

import re

from hone.errors import ExitCode, UserError
from tests.conftest import ROOT


def readme_codes() -> dict[int, str]:
    """{code: name} from the rows of README.md's exit-code table (| 0 | `OK` | ... |)."""
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", (ROOT / "README.md").read_text(), re.M)
    return {int(code): name for code, name in rows}


def test_the_readme_table_lists_exactly_the_exit_codes() -> None:
    assert readme_codes() == {code.value: code.name for code in ExitCode}


def test_every_error_and_signal_exits_with_a_listed_code() -> None:
    import hone.compress
    import hone.export
    import hone.tune  # noqa: F401  (their errors subclass UserError)
    from hone.checkpoint.signals import EXIT_CODES

    errors, todo = [], [UserError]
    while todo:
        cls = todo.pop()
        errors.append(cls)
        todo.extend(cls.__subclasses__())
    listed = {code.value for code in ExitCode}
    assert len(errors) > 4
    assert {cls.__name__: cls.exit_code for cls in errors if cls.exit_code not in listed} == {}
    assert set(EXIT_CODES.values()) <= listed
