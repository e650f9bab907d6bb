"""`hone compress RUN --quantize int8 | --prune RATIO | --distill STUDENT_CONFIG [--output DIR]
[--max-drop X]`: a smaller or faster copy of a trained run, and a table comparing it with
the original."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from hone.cli.output import add_json_flag, print_json
from hone.errors import ConfigError

if TYPE_CHECKING:
    from hone.compress import CompressionMethod


def add_parser(sub: Any) -> None:
    """Add `compress` to the `hone` subcommands (`sub` is argparse's subparsers object)."""
    p = sub.add_parser(
        "compress",
        help="compress a trained run into a new run directory, with a comparison table",
        description=(
            "Write a compressed copy of a run (default RUN-<method> beside it) that hone eval, "
            "predict and sample use like any run, and a table of both models (compress.json). "
            "Exit code 1, and nothing written, when the validation metric drops by more than "
            "--max-drop."
        ),
    )
    p.add_argument(
        "run_dir",
        help="a run directory written by `hone train`, or a Hugging Face checkpoint (a "
        "folder, or hf:ORG/NAME; name its data with --data.*)",
    )
    method = p.add_mutually_exclusive_group(required=True)
    method.add_argument(
        "--quantize",
        choices=["int8"],
        help="int8: dynamic int8 quantization of the linear layers, for CPU inference",
    )
    method.add_argument(
        "--prune",
        type=float,
        metavar="RATIO",
        help="remove this fraction of the weights (0 < RATIO < 1): by magnitude over all "
        "linear and convolution layers, or with --structured whole units, channels and heads",
    )
    method.add_argument(
        "--distill",
        metavar="STUDENT_CONFIG",
        help="train a student (a recipe or TOML; config overrides on the command line apply to "
        "it) on the run's soft targets, on the run's data",
    )
    p.add_argument(
        "--backend",
        help="--quantize's runtime: auto (default: onnxruntime, with 7-bit weights on CPUs "
        "without VNNI/AMX), onnxruntime or torch",
    )
    p.add_argument(
        "--structured",
        action="store_true",
        help="--prune: remove whole hidden units, channels and attention heads, so the "
        "matrices shrink (Torch-Pruning)",
    )
    p.add_argument(
        "--finetune-steps",
        type=int,
        help="--prune: training steps after pruning, with the run's config (default 0)",
    )
    p.add_argument(
        "--iterations",
        type=int,
        help="--prune: prune in this many rounds, each followed by its share of "
        "--finetune-steps (default 1)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        help="--distill: softening of both distributions (default 2)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        help="--distill: weight of the soft-target loss, 1 - alpha the labels' (default 0.5)",
    )
    p.add_argument("--output", help="the new run directory (default: RUN-<method> beside RUN)")
    p.add_argument(
        "--max-drop",
        type=float,
        help="the largest drop of the validation metric accepted: points of accuracy (or of "
        "r2 x 100), percent of the loss for language models (default 1)",
    )
    p.add_argument(
        "--repeats", type=int, help="timed repeats of each latency figure, a median (default 10)"
    )
    p.add_argument(
        "--threads", type=int, help="torch and ONNX Runtime threads while measuring (default 1)"
    )
    add_json_flag(p, "the comparison (compress.json's table) and the new run directory")
    p.set_defaults(run=run)


# Each method's own flags, to refuse them with another method.
METHOD_FLAGS = {
    "quantize": ("backend",),
    "prune": ("structured", "finetune_steps", "iterations"),
    "distill": ("temperature", "alpha"),
}


def build_method(args: argparse.Namespace) -> CompressionMethod:
    """The CompressionMethod the flags ask for: one branch per method flag."""
    from hone.compress import Distill, Prune, QuantizeInt8

    chosen = next(name for name in METHOD_FLAGS if getattr(args, name) is not None)
    for name, flags in METHOD_FLAGS.items():
        for flag in flags:
            if name != chosen and getattr(args, flag) not in (None, False):
                option = "--" + flag.replace("_", "-")
                raise ConfigError(f"{option} goes with --{name}, not --{chosen}")
    others = [o for o in args.overrides if not o.startswith("data.")]
    if others and chosen != "distill":
        raise ConfigError(
            f"hone compress takes no config overrides but a --distill student's and --data.* "
            f"(the data to measure on), got --{others[0]}; the run's own config is used"
        )
    if chosen == "prune":
        given = {k: getattr(args, k) for k in ("finetune_steps", "iterations")}
        return Prune(
            args.prune, args.structured, **{k: v for k, v in given.items() if v is not None}
        )
    if chosen == "distill":
        given = {k: getattr(args, k) for k in ("temperature", "alpha")}
        return Distill(
            args.distill, args.overrides, **{k: v for k, v in given.items() if v is not None}
        )
    assert args.quantize == "int8", args
    return QuantizeInt8(args.backend or "auto")


def run(args: argparse.Namespace) -> int:
    from hone.compress import compress
    from hone.compress.report import render
    from hone.errors import GateFailed

    try:
        given = {k: getattr(args, k) for k in ("max_drop", "repeats", "threads")}
        table, output = compress(
            args.run_dir,
            build_method(args),
            args.output,
            log=lambda line: print(line, file=sys.stderr),
            data=[] if args.distill is not None else args.overrides,
            **{k: v for k, v in given.items() if v is not None},
        )
    except GateFailed as failure:
        if failure.report is not None:  # the comparison that failed; nothing was written
            if args.json:
                print_json({**failure.report, "output": None})
            else:
                render(failure.report)
        raise
    if args.json:
        print_json({**table, "output": output})
        return 0
    render(table)
    print(f"compressed run: {output}")
    return 0
