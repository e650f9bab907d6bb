"""Federated training on Flower: one model trained across clients whose data never leaves them.

`federate(cfg, run_dir)` simulates `federated.clients` clients on this machine; `hone
federate CONFIG --deploy DIR` writes the same apps as a Flower app for the deployment engine
(a SuperLink and one SuperNode per site; docs/federated.md). Modules: `partition` (dividing
the data with flwr-datasets), `client` (the ClientApp: a round of hone's Trainer),
`proximal` (FedProx's term), `strategies` (Flower's, by name), `server` (the rounds and the
run directory), `grid` (the in-process engine), `apps`, `simulation`, `deploy`.

Flower is an optional dependency (`pip install 'hone-ml[federated]'`): nothing here imports
it until a federated run starts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from hone.config import Config
from hone.errors import ConfigError

REQUIRED = {"flwr": "flwr", "flwr_datasets": "flwr-datasets"}


def require_flower() -> None:
    """A one-line ConfigError (exit 2) naming the extra to install when Flower is missing."""
    missing = [
        name for module, name in REQUIRED.items() if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise ConfigError(
            f"federated training needs {' and '.join(missing)}: pip install 'hone-ml[federated]'"
        )


def federate(cfg: Config, run_dir: str | Path, resume: bool | str = False) -> dict[str, Any]:
    """Train `cfg` across `federated.clients` simulated clients into `run_dir`; the summary."""
    require_flower()
    from hone.federate.simulation import simulate

    return simulate(cfg, run_dir, resume)


__all__ = ["federate", "require_flower"]
