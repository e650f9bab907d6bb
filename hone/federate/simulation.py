"""One machine, many clients: the simulation engines (`federated.engine`).

`inprocess` runs every client in this process, one after another, through hone's
`InProcessGrid`; `ray` is Flower's own Simulation Runtime, which runs the clients in Ray
actors (processes) side by side. Both run the same ServerApp and ClientApp. On 2 cores the
in-process engine won by a wide margin: BENCHMARKS.md and docs/federated.md have the numbers.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
from flwr.app import Context, RecordDict

from hone.config import Config
from hone.errors import ConfigError
from hone.federate.apps import client_app, server_app_for
from hone.federate.grid import InProcessGrid
from hone.federate.server import FederationFailed


def simulate(cfg: Config, run_dir: str | Path, resume: bool | str = False) -> dict[str, Any]:
    """Train `cfg` with `federated.clients` simulated clients; return the run's summary."""
    summaries: list[dict[str, Any]] = []
    app = server_app_for(cfg, run_dir, resume, summaries)
    fed = cfg.federated
    if fed.engine == "inprocess":
        context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
        threads = torch.get_num_threads()
        # Tiny models on a shared machine: two threads per op spin against other processes
        # (mlp-digits, 10 x 20: 243 s with torch's two threads, 13 s with one).
        torch.set_num_threads(fed.client_threads or threads)
        try:
            app(InProcessGrid(client_app, fed.clients), context)
        finally:
            torch.set_num_threads(threads)
    else:
        _ray(app, fed.clients, fed.client_threads or 1)
        if not summaries:  # the ServerApp runs in a thread whose errors Flower only logs
            raise FederationFailed(
                "the Ray simulation ended without finishing the run; see its log"
            )
    return summaries[0]


def _ray(app: Any, clients: int, threads: int) -> None:
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(
            "federated.engine = 'ray' needs Ray: pip install 'flwr[simulation]', or set "
            "--federated.engine=inprocess"
        )
    from flwr.simulation import run_simulation

    cpus = os.cpu_count() or 1
    backend = {
        # A client's threads are its cores: as many clients train at once as the cores allow.
        "client_resources": {"num_cpus": threads, "num_gpus": 0.0},
        "init_args": {"num_cpus": cpus, "logging_level": "error", "log_to_driver": False},
    }
    run_simulation(app, client_app, num_supernodes=clients, backend_config=backend)  # type: ignore[arg-type]
