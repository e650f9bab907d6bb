"""`hone export RUN --format onnx|safetensors|hf|peft`: parse, run hone.export, print what
was written."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from hone.cli.output import add_json_flag, print_json
from hone.errors import ConfigError


def add_parser(sub: Any) -> None:
    """Add `export` to the `hone` subcommands (`sub` is argparse's subparsers object)."""
    p = sub.add_parser(
        "export",
        help="export a run: an ONNX graph checked against PyTorch, a safetensors bundle, a "
        "Hugging Face checkpoint, or LoRA adapters in PEFT's format",
        description=(
            "onnx: the model as an ONNX graph (dynamic batch, and sequence length for language "
            "models), checked against PyTorch on random and real inputs; exit 1 and nothing "
            "written when they differ by more than --tolerance. safetensors: a self-contained "
            "bundle (weights, config, preprocessing or tokenizer, manifest) that predict, "
            "sample and serve load without the run. hf: a Hugging Face checkpoint folder "
            "(config.json, safetensors weights, tokenizer) that transformers loads, of a "
            "language model trained from a checkpoint or of a llama or GPT-2 shaped gpt run; "
            "a LoRA run with --merge (the adapters folded into the base weights). peft: a LoRA "
            "run's adapters alone (adapter_config.json, adapter_model.safetensors), which "
            "peft.PeftModel.from_pretrained loads on the base checkpoint."
        ),
    )
    p.add_argument(
        "run_dir",
        help="a run directory written by `hone train`, a bundle, or a Hugging Face checkpoint "
        "(a folder, or hf:ORG/NAME)",
    )
    p.add_argument("--format", required=True, choices=["onnx", "safetensors", "hf", "peft"])
    p.add_argument(
        "--output",
        help="file (onnx) or folder (safetensors, hf, peft); default RUN/model.onnx, "
        "RUN/bundle; hf and peft: required",
    )
    p.add_argument(
        "--merge",
        action="store_true",
        help="hf: fold a LoRA run's adapters into the base weights (in the base's dtype)",
    )
    p.add_argument(
        "--max-shard-size",
        help="hf: the largest weights file, e.g. 500MB; larger models are written in shards "
        "with an index (default 5GB, as transformers)",
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
    from hone.pretrained.source import is_checkpoint

    if args.format != "onnx":
        given = [flag for flag in ("tolerance", "opset") if getattr(args, flag) is not None]
        if given:
            raise ConfigError(f"--{given[0]} applies to --format onnx only; drop it")
    if args.format != "hf" and args.max_shard_size is not None:
        raise ConfigError("--max-shard-size applies to --format hf only; drop it")
    if args.format != "hf" and args.merge:
        raise ConfigError("--merge applies to --format hf only; drop it")
    if args.format == "hf":
        return _export_hf(args)
    if args.format == "peft":
        return _export_peft(args)
    if args.output is None and is_checkpoint(args.run_dir):  # its run folder is in the cache
        raise ConfigError(
            f"{args.run_dir} is a Hugging Face checkpoint; name the file to write with --output"
        )
    if args.format == "safetensors":
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


def _export_hf(args: argparse.Namespace) -> int:
    from hone.export.hf import export_hf, parse_size
    from hone.pretrained.weights import DEFAULT_MAX_SHARD_BYTES

    if args.output is None:
        raise ConfigError("--format hf needs --output DIR, the folder of the checkpoint to write")
    size = (
        DEFAULT_MAX_SHARD_BYTES if args.max_shard_size is None else parse_size(args.max_shard_size)
    )
    written = export_hf(args.run_dir, args.output, size, merge=args.merge)
    if args.json:
        print_json({"format": args.format, **dataclasses.asdict(written)})
        return 0
    print(f"wrote {written.path} ({', '.join(written.files)})")
    if written.tokenizer:
        print(f"hone: {written.tokenizer}", file=sys.stderr)
    return 0


def _export_peft(args: argparse.Namespace) -> int:
    from hone.export.peft import export_peft

    if args.output is None:
        raise ConfigError("--format peft needs --output DIR, the folder of the adapter to write")
    files = export_peft(args.run_dir, args.output)
    if args.json:
        print_json(
            {"format": args.format, "path": str(args.output), "files": [f.name for f in files]}
        )
        return 0
    print(f"wrote {args.output} ({', '.join(f.name for f in files)})")
    return 0
