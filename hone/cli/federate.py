"""`hone federate CONFIG`: one model trained across clients whose data never leaves them
(hone/federate, on Flower)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from hone.cli.output import add_json_flag, print_json
from hone.errors import ConfigError, ExitCode

EXAMPLES = """\
The [federated] section sets clients, rounds, fraction, local_steps or local_epochs,
strategy, partition; every key: `hone config keys | grep federated`.

examples:
  hone federate mlp-digits --federated.clients=10 --federated.rounds=20
  hone federate mlp-digits --federated.partition=dirichlet --federated.alpha=0.1 \\
      --federated.strategy=fedprox --federated.proximal_mu=0.1
  hone federate --resume runs/mlp-digits-federated-20261130T1200Z
  hone federate mlp-digits --deploy app --run-dir /srv/runs/digits   then: flwr run app CONNECTION
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "federate",
        help="federated training on Flower: simulated clients, or an app for SuperLink/SuperNodes",
        description="Train one model across clients whose data stays with them: simulated on "
        "this machine, or (--deploy) as a Flower app for a SuperLink and one SuperNode per "
        "site. Config overrides: --section.key=value.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="recipe name or TOML file (with --resume: optional)")
    p.add_argument("--run-dir", help="run directory (default runs/<recipe>-federated-<UTC time>)")
    p.add_argument(
        "--resume",
        help="continue a run directory from its last completed round, or 'auto' with --run-dir",
    )
    p.add_argument(
        "--deploy",
        metavar="APP_DIR",
        help="write a Flower app to APP_DIR for `flwr run APP_DIR CONNECTION` instead of "
        "simulating; --run-dir is then a folder on the SuperLink's machine",
    )
    add_json_flag(p, "the final summary (with the run directory)")
    p.set_defaults(run=federate)


def federate(args: argparse.Namespace) -> int:
    from hone.checkpoint import plan_resume
    from hone.config import load_config
    from hone.federate import federate as run_federated
    from hone.federate import require_flower
    from hone.run_files import default_run_dir
    from hone.track.progress import print_summary

    require_flower()
    if args.deploy:
        return _deploy(args)
    resume: bool | str = False
    if args.resume:  # the run's own config (overrides only where exactness allows)
        cfg, folder, target = plan_resume(
            args.resume, args.run_dir, args.config, args.overrides, "mlp-digits"
        )
        if isinstance(target, str) and target != "auto":
            raise ConfigError(
                f"--resume {args.resume}: a federated run resumes from its last completed "
                f"round; pass its run directory, {folder}"
            )
        run_dir, resume = folder, target
    elif args.config is None:
        raise ConfigError("hone federate needs a config: a recipe name or a TOML file")
    else:
        cfg = load_config(args.config, args.overrides)
        run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(f"{cfg.recipe}-federated")
    from flwr.supercore.logger import update_console_handler

    # Flower's INFO lines (every sampling, every aggregation) would drown hone's progress.
    update_console_handler(level=logging.WARNING)
    try:
        summary = run_federated(cfg, run_dir, resume)
    except KeyboardInterrupt:
        print(
            f"hone: interrupted; continue from the last completed round with "
            f"`hone federate --resume {run_dir}`",
            file=sys.stderr,
        )
        return ExitCode.INTERRUPTED
    print_summary(
        {k: v for k, v in summary.items() if v is not None},
        title=f"hone federate {cfg.recipe}",
    )
    if args.json:
        print_json(summary)
    else:
        print(f"run directory: {run_dir}")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    """Write the Flower app; the run directory (and any run to resume) is on the SuperLink's
    machine, so nothing of it is read here: the server checks a resumed config itself."""
    from hone.config import load_config
    from hone.federate.deploy import write_app
    from hone.run_files import default_run_dir

    if args.config is None:
        raise ConfigError("hone federate --deploy needs a config: a recipe name or a TOML file")
    cfg = load_config(args.config, args.overrides)
    if args.resume and args.resume != "auto":
        run_dir, resume = Path(args.resume), "true"
    elif args.resume:
        if not args.run_dir:
            raise ConfigError("--resume auto needs --run-dir: the run directory to continue")
        run_dir, resume = Path(args.run_dir), "auto"
    else:
        run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(f"{cfg.recipe}-federated")
        resume = ""
    path = write_app(cfg, args.deploy, run_dir, resume)
    if args.json:
        print_json({"app": path.parent, "run_dir": run_dir.resolve()})
        return 0
    print(
        f"wrote the Flower app {path}; the run trains into {run_dir.resolve()} on the "
        f"SuperLink's machine.\nStart it with `flwr run {args.deploy} CONNECTION --stream` once "
        f"the SuperLink and {cfg.federated.clients} SuperNodes are up (docs/federated.md)."
    )
    return 0
