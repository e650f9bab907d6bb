"""`hone export RUN --format onnx|safetensors`: parse, run hone.export, print what was written."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from hone.cli.output import add_json_flag, print_json
from hone.errors import ConfigError


def add_parser(sub: Any) -> None:
    """Add `export` to the `hone` subcommands (`sub` is argparse's subparsers object)."""
    p = sub.add_parser(
        "export",
        help="export a run: an ONNX graph checked against PyTorch, or a safetensors bundle",
        description=(
            "onnx: the model as an ONNX graph (dynamic batch, and sequence length for language "
            "models), checked against PyTorch on random and real inputs; exit 1 and nothing "
            "written when they differ by more than --tolerance. safetensors: a self-contained "
            "bundle (weights, config, preprocessing or tokenizer, manifest) that predict, "
            "sample and serve load without the run."
        ),
    )
    p.add_argument("run_dir", help="a run directory written by `hone train` (or a bundle)")
    p.add_argument("--format", required=True, choices=["onnx", "safetensors"])
    p.add_argument(
        "--output", help="file (onnx) or folder (safetensors); default RUN/model.onnx, RUN/bundle"
    )
    p.add_argument(
        "--tolerance",
        type=float,
        help="onnx: largest max abs difference from PyTorch accepted (default 1e-4)",
    )
    p.add_argument("--opset", type=int, help="onnx: ONNX opset to write (default: torch's)")
    add_json_flag(p, "what was written (onnx: and the parity checks)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from hone.export import DEFAULT_TOLERANCE, export_bundle, export_onnx

    if args.format == "safetensors":
        given = [flag for flag in ("tolerance", "opset") if getattr(args, flag) is not None]
        if given:
            raise ConfigError(f"--{given[0]} applies to --format onnx only; drop it")
        bundle = export_bundle(args.run_dir, args.output)
        if args.json:
            print_json({"format": args.format, "path": bundle})
        else:
            print(f"wrote {bundle}")
        return 0
    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    report = export_onnx(args.run_dir, args.output, tolerance, args.opset)
    if args.json:
        print_json(
            {
                "format": args.format,
                **dataclasses.asdict(report),
                "max_abs_diff": report.max_abs_diff,
            }
        )
        return 0
    print(
        f"wrote {report.path} (opset {report.opset}): max abs difference from PyTorch "
        f"{report.max_abs_diff:.3g} <= tolerance {report.tolerance:g} over "
        f"{len(report.checks)} checks ({report.parity_path})"
    )
    return 0
