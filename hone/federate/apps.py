"""hone's Flower apps: one ClientApp and one ServerApp, the same under every engine.

`client_app` (hone.federate.client) trains a round on the node's partition. The ServerApp
runs `FederatedRun` over the grid it is given: `server_app_for(...)` binds a config and a run
directory for a simulation in this process; `server_app` reads them from the run config of
a Flower app (`hone federate --deploy DIR` writes one) when the deployment engine starts it
next to a SuperLink.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from hone.config import Config
from hone.federate import protocol as p
from hone.federate.client import client_app
from hone.federate.grid import OrderedGrid
from hone.federate.server import FederatedRun


def server_app_for(
    cfg: Config, run_dir: str | Path, resume: bool | str, summaries: list[dict[str, Any]]
) -> ServerApp:
    """A ServerApp that trains `cfg` into `run_dir`; the run's summary is appended to
    `summaries` (a ServerApp returns nothing)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        summaries.append(FederatedRun(cfg, run_dir, resume).run(OrderedGrid(grid)))

    return app


server_app = ServerApp()


@server_app.main()
def deployed(grid: Grid, context: Context) -> None:
    """The deployment engine's entry point: config and run directory from the run config."""
    run_config = context.run_config
    cfg = p.config_from_text(str(run_config[p.HONE_CONFIG]))
    resume = str(run_config.get(p.RESUME, ""))
    FederatedRun(cfg, str(run_config[p.RUN_DIR]), resume or False).run(OrderedGrid(grid))


__all__ = ["client_app", "server_app", "server_app_for"]
