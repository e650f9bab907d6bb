"""The `hone` command line: parse, build, run, report. Logic lives in the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from hone.cli.output import add_json_flag, stdout_gone
from hone.errors import ConfigError, ExitCode, UserError
from hone.glibc_malloc import relaunch_to_train


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message}; see `{self.prog} --help`")


def split_overrides(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate config overrides (--a.b=value or --a.b value) from the other arguments."""
    rest, overrides = [], []
    items = list(args)
    i = 0
    while i < len(items):
        item = items[i]
        key = item[2:].split("=", 1)[0]
        if item.startswith("--") and "." in key:
            if "=" in item:
                overrides.append(item[2:])
            elif i + 1 < len(items):
                overrides.append(f"{key}={items[i + 1]}")
                i += 1
            else:
                raise ConfigError(f"override {item} has no value; write it as {item}=VALUE")
        else:
            rest.append(item)
        i += 1
    return rest, overrides


_EXAMPLES = """\
examples:
  hone train mlp-digits --optim.lr=3e-4        a recipe with one setting changed
  hone train my.toml                           my.toml: base = "mlp-digits" and what differs
  hone tune mlp-digits --trials 20             search the recipe's default [tune.space]

Every config key with its default and help: `hone config keys`.
"""

_TRAIN_EXAMPLES = """\
Config overrides: --section.key=value (values read as TOML). Every key with its default and
help: `hone config keys`; the whole resolved config: `hone config show CONFIG`.

examples:
  hone train mlp-digits --optim.lr=3e-4 --train.max_epochs=10
  hone train my.toml --run-dir runs/my-run     my.toml: base = "mlp-digits" and what differs
  hone train mlp-digits --model.name=custom --model.target=mymodels:build
                                               mymodels.py in this folder or beside the TOML
"""


def versions() -> str:
    """hone's, torch's and Python's versions; torch's from its metadata, without importing it."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from hone import __version__

    try:
        torch = version("torch")
    except PackageNotFoundError:
        torch = "not installed"
    return f"hone {__version__} (torch {torch}, Python {platform.python_version()})"


_RUN_HELP = (
    "a run directory, a bundle, or a Hugging Face checkpoint (a folder with config.json and "
    "*.safetensors, or hf:ORG/NAME[@REVISION]: docs/pretrained.md)"
)


def _add_backend_flag(parser: argparse.ArgumentParser) -> None:
    # The names are hone.engine.backends.BACKENDS': an unknown one is answered with the list.
    parser.add_argument(
        "--backend",
        default="auto",
        help="what runs the model: torch, onnx (RUN/model.onnx from `hone export`, on ONNX "
        "Runtime) or auto, the run's own (onnx for an int8 ONNX Runtime run, else torch)",
    )


def build_parser() -> argparse.ArgumentParser:
    from hone.cli import (
        chat,
        commands,
        compress,
        doctor,
        export,
        federate,
        lr_find,
        report,
        runs,
        serve,
    )
    from hone.cli import eval as eval_command  # not `eval`: Python's builtin

    parser = _Parser(
        prog="hone",
        description="Train and tune neural networks from one typed config.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=versions())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser(
        "train",
        help="train a recipe or TOML config",
        epilog=_TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "config", nargs="?", help="recipe name or TOML file (default: gpt-shakespeare-char)"
    )
    p.add_argument("--run-dir", help="run directory (default runs/<recipe>-<UTC time>)")
    p.add_argument("--cv", type=int, default=0, help="k-fold cross-validation with K folds")
    p.add_argument(
        "--resume", help="resume a run directory, or 'auto' for --run-dir's newest checkpoint"
    )
    p.add_argument(
        "--nproc", type=int, default=1, help="worker processes on this machine (torchrun)"
    )
    p.add_argument("--nnodes", type=int, default=1, help="machines taking part (c10d rendezvous)")
    p.add_argument("--node-rank", type=int, default=0, help="this machine's rank among --nnodes")
    p.add_argument(
        "--rdzv-endpoint", default="", help="HOST:PORT of the rendezvous for several machines"
    )
    p.add_argument(
        "--max-restarts", type=int, default=0, help="elastic restarts of the worker group"
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="profile a window of steps (train.profile=true): trace, top operators, time shares",
    )
    add_json_flag(p, "the final summary (with the run directory)")
    p.set_defaults(run=commands.train)

    p = sub.add_parser("recipes", help="list the built-in recipes")
    add_json_flag(p, "the recipes and their descriptions")
    p.set_defaults(run=commands.recipes)

    p = sub.add_parser("config", help="inspect configs")
    csub = p.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    show = csub.add_parser("show", help="print the fully resolved config as TOML")
    show.add_argument("config", nargs="?", help="recipe name or TOML file")
    show.set_defaults(run=commands.config_show)
    keys = csub.add_parser("keys", help="list every config key with its default and help")
    add_json_flag(keys, "the keys, defaults and help")
    keys.set_defaults(run=commands.config_keys)

    eval_command.add_parser(sub, _RUN_HELP, _add_backend_flag)

    p = sub.add_parser("predict", help="predict a CSV file with a finished run")
    p.add_argument("run_dir")
    p.add_argument("--input", required=True, help="CSV with a header and the feature columns")
    p.add_argument("--output", required=True, help="CSV to write (input columns + predictions)")
    p.add_argument("--device", default="auto")
    _add_backend_flag(p)
    p.set_defaults(run=commands.predict)

    p = sub.add_parser("sample", help="generate text from a trained language model")
    p.add_argument("run_dir", help=_RUN_HELP)
    p.add_argument("--prompt", default="\n")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument(
        "--top-k", type=int, default=0, help="sample among the k likeliest tokens (0: all)"
    )
    p.add_argument(
        "--top-p",
        type=float,
        default=None,
        help="sample among the fewest likeliest tokens whose probabilities add up to P "
        "(nucleus sampling; default: off, as 1.0)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    _add_backend_flag(p)
    p.set_defaults(run=commands.sample)

    commands.add_tune_parser(sub)
    lr_find.add_parser(sub)
    doctor.add_parser(sub)
    compress.add_parser(sub)
    export.add_parser(sub)
    serve.add_parser(sub)
    chat.add_parser(sub)
    federate.add_parser(sub)
    runs.add_parser(sub)
    report.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hone` console script; returns the exit code (the table in
    README.md, `hone.errors.ExitCode`)."""
    if argv is None:  # the console script: a training command starts again tuned, at once
        relaunch_to_train(sys.argv[1:])
    try:
        try:
            code = _run(list(sys.argv[1:] if argv is None else argv))
        finally:
            # Inside the try: a reader that left must show here, not in the interpreter's
            # final flush, where it could only be an "Exception ignored" line on stderr.
            sys.stdout.flush()
    except BrokenPipeError:
        return stdout_gone()
    except SystemExit as stop:
        # rich's Console answers a broken pipe with SystemExit(1) (Console.on_broken_pipe);
        # the same event gets the same code as a print's BrokenPipeError.
        if isinstance(stop.__context__, BrokenPipeError):
            return stdout_gone()
        raise
    return code


def _run(argv: list[str]) -> int:
    """Parse `argv` and run the command; a user's mistake is one line on stderr."""
    try:
        rest, overrides = split_overrides(argv)
        args = build_parser().parse_args(rest)
        args.overrides = overrides
        return int(args.run(args) or 0)
    except UserError as e:
        print(f"hone: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("hone: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
