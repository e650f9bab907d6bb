"""`python`: the data set a run records when its data was handed in from Python.

A run keeps no copy of data handed to `hone.Trainer` (arrays, a DataLoader), so its config
names this data set, which answers anything that needs the data with how to hand it in
again: a data set on the command line (`--data.name=npz --data.path=FILE`), or from Python.
"""

from __future__ import annotations

from dataclasses import dataclass

from hone.config import Config, opt, register_data_config
from hone.data.base import DATASETS, Data
from hone.data.split import task_field
from hone.errors import ConfigError


class DataNotHeld(ConfigError):
    """The run's data was handed in from Python and is not at hand; those who can do
    without real data (an export's parity check) catch this one."""


@register_data_config("python")
@dataclass
class PythonDataConfig:
    """How batches handed in from Python are read (hone.data.loaders)."""

    input_column: str = opt(
        "",
        "the input's key in batches of dicts or a datasets.Dataset (default: the first of x, "
        "input, inputs, features, image, pixel_values, input_ids)",
    )
    target_column: str = opt(
        "",
        "the target's key in batches of dicts or a datasets.Dataset (default: the first of y, "
        "label, labels, target, targets)",
    )
    task: str = task_field()


@DATASETS.register("python")
def python_data(cfg: Config) -> Data:
    """Refuses: the data lived in the Python process that trained the run."""
    raise DataNotHeld(
        "this run was trained on data handed in from Python, which the run does not keep; "
        "name the data on the command line, e.g. `hone eval RUN --data.name=npz "
        "--data.path=FILE` (hone eval and hone compress take any data set's --data.* keys), "
        "or evaluate from Python: `hone.load_run(RUN).evaluate(data=(x, y))`"
    )
