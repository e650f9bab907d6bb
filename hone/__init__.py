"""hone: trains neural nets from one typed config, or from the model and data you hold.

import hone
summary = hone.Trainer(model, train_loader, val_loader, config="mlp-digits",
                       overrides=["train.max_epochs=5"]).fit()
run = hone.load_run(summary["run_dir"])
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The model families register their configs with hone.config when imported; hone.config
# imports them on first need (hone.config.components), so `import hone` and the commands
# that read run files only (`hone doctor`) do not load torch. The public names below are
# imported on first use for the same reason.
_PUBLIC = {
    "Trainer": "hone.engine.trainer",
    "Observer": "hone.engine.observers",
    "Task": "hone.engine.tasks",
    "register_task": "hone.engine.tasks",
    "Metric": "hone.metrics",
    "register_metric": "hone.metrics",
    "Config": "hone.config",
    "load_config": "hone.config",
    "LoadedRun": "hone.engine.inference",
    "load_run": "hone.engine.inference",
}

if TYPE_CHECKING:
    from hone.config import Config, load_config
    from hone.engine.inference import LoadedRun, load_run
    from hone.engine.observers import Observer
    from hone.engine.tasks import Task, register_task
    from hone.engine.trainer import Trainer
    from hone.metrics import Metric, register_metric

__all__ = [
    "Config",
    "LoadedRun",
    "Metric",
    "Observer",
    "Task",
    "Trainer",
    "__version__",
    "load_config",
    "load_run",
    "register_metric",
    "register_task",
]
assert set(__all__) == {"__version__", *_PUBLIC}


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'hone' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name]), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
