"""Several machines: hone's apps as a Flower app for the deployment engine.

`write_app(cfg, app_dir, run_dir)` writes a Flower app: a pyproject.toml whose components
are hone's own ServerApp and ClientApp (installed with hone on every machine, so the app
carries no code) and whose run config holds the run's whole config and the server's run
directory. `flwr run APP_DIR CONNECTION` sends it to a SuperLink, which starts the ServerApp
beside itself; each SuperNode runs the ClientApp on its own data (docs/federated.md).
"""

from __future__ import annotations

import re
from pathlib import Path

import tomli_w
from flwr.common.constant import FAB_CONFIG_FILE  # pyproject.toml: a Flower app's one file

from hone.config import Config
from hone.federate import protocol as p


def app_name(cfg: Config) -> str:
    """A project name Flower accepts: letters, digits and dashes."""
    stem = re.sub(r"[^a-z0-9]+", "-", (cfg.recipe or "run").lower()).strip("-")
    return f"hone-{stem or 'run'}"


def write_app(cfg: Config, app_dir: str | Path, run_dir: str | Path, resume: str = "") -> Path:
    """Write the Flower app that trains `cfg` into `run_dir` (on the SuperLink's machine);
    returns its pyproject.toml. `resume` ("", "auto" or "true") continues the run there."""
    folder = Path(app_dir)
    folder.mkdir(parents=True, exist_ok=True)
    project = {
        "project": {
            "name": app_name(cfg),
            "version": "1.0.0",
            "description": cfg.description or f"hone federate {cfg.recipe}",
            "license": "Apache-2.0",
            # hone itself must be installed where the apps run: `pip install 'hone-ml[federated]'`
            "dependencies": [],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "hone",
                    "components": {
                        "serverapp": "hone.federate.apps:server_app",
                        "clientapp": "hone.federate.apps:client_app",
                    },
                    "config": {
                        p.HONE_CONFIG: p.config_text(cfg),
                        p.RUN_DIR: str(Path(run_dir).resolve()),
                        p.RESUME: resume,
                    },
                }
            }
        },
    }
    path = folder / FAB_CONFIG_FILE
    path.write_text(tomli_w.dumps(project, multiline_strings=True))
    return path
