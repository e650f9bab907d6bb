"""`hone eval RUN`: a finished run's loss and metric on a split of its data. For a run trained on
chat or instruction data, the loss is on the answers it learned from; with `--generate`, the
model before fine-tuning and after answer the held-out prompts greedily, scored by exact match
and containment (hone.engine.judge), in one table."""

from __future__ import annotations

import argparse
from typing import Any

from hone.cli.output import add_json_flag, print_json
from hone.errors import ConfigError

EXAMPLES = """examples:
  hone eval runs/my-run --split test
  hone eval runs/my-chat --generate                   answers to data.val_path's prompts, scored
  hone eval runs/my-chat --generate --data.val_path=more.jsonl --limit 20
"""


def add_parser(sub: Any, run_help: str, add_backend_flag: Any) -> None:
    """Add `eval` to the `hone` subcommands (`sub` is argparse's subparsers object)."""
    p = sub.add_parser(
        "eval",
        help="evaluate a finished run",
        description="Evaluate a finished run on a split of its data, or of the data that\n"
        "--data.* overrides name (--data.name=npz --data.path=FILE): the only overrides it\n"
        "takes, and the way to evaluate a run trained on data handed in from Python. A chat\n"
        "run's loss is on its answers (data.train_on); --generate scores its answers.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", help=run_help)
    p.add_argument("--split", default="val", help="val, test or train")
    p.add_argument(
        "--generate",
        action="store_true",
        help="chat runs: greedy answers to the held-out prompts (data.val_path), scored by "
        "exact match and containment, before fine-tuning (the run's checkpoint) and after",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=0,
        help="--generate: the longest answer, in tokens (0: the longest reference's + 8)",
    )
    p.add_argument("--limit", type=int, default=0, help="--generate: the first N prompts (0: all)")
    p.add_argument("--device", default="auto")
    add_backend_flag(p)
    add_json_flag(p, "the metrics")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.generate:
        return generate(args)
    if args.max_new_tokens or args.limit:
        raise ConfigError("--max-new-tokens and --limit go with --generate; add --generate")
    from hone.engine.inference import evaluate_run

    metrics = evaluate_run(args.run_dir, args.split, args.device, args.overrides, args.backend)
    if args.json:
        print_json(metrics)
        return 0
    for key, value in metrics.items():
        print(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")
    return 0


def generate(args: argparse.Namespace) -> int:
    from hone.engine.judge import RESULT_FILE, judge_run

    if args.split != "val":
        raise ConfigError(
            f"--generate answers the held-out prompts (data.val_path), not --split {args.split}; "
            "drop --split, or name other records with --data.val_path=FILE"
        )
    if args.backend != "auto":
        raise ConfigError("--generate runs the models on torch; drop --backend")
    if args.max_new_tokens < 0 or args.limit < 0:
        raise ConfigError("--max-new-tokens and --limit must be at least 0 (0: the default)")
    with _progress(quiet=args.json) as progress:
        result = judge_run(
            args.run_dir, True, args.device, args.overrides, args.max_new_tokens, args.limit,
            progress,
        )  # fmt: skip
    if args.json:
        print_json(result)
    else:
        render(result)
        print(f"answers written to {args.run_dir}/{RESULT_FILE}")
    return 0


class _progress:
    """A rich progress bar of the answers generated (on stderr; none with --json)."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.bar = Progress(
            "answering", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), disable=quiet, transient=True,
        )  # fmt: skip

    def __enter__(self) -> Any:
        self.bar.start()

        def start(total: int) -> Any:
            task = self.bar.add_task("answers", total=total)
            return lambda: self.bar.advance(task)

        return start

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


def render(result: dict[str, Any]) -> None:
    """The before/after table."""
    from rich.console import Console
    from rich.table import Table

    models = result["models"]
    table = Table(
        title=f"hone eval --generate: {result['num_prompts']} held-out prompts, greedy, "
        f"at most {result['max_new_tokens']} new tokens"
    )
    table.add_column("")
    for label in models:
        name = "before (base checkpoint)" if label == "before" else "after (this run)"
        table.add_column(name, justify="right")
    rows = [
        ("exact match", "exact_match", "{:.1%}"),
        ("contains the reference", "contains", "{:.1%}"),
        ("answer loss", "loss", "{:.4g}"),
        ("answer perplexity", "perplexity", "{:.4g}"),
    ]
    for title, key, form in rows:
        table.add_row(title, *(form.format(m[key]) for m in models.values()))
    Console(highlight=False).print(table)
    if "before" not in models:
        print("no before: the run did not start from a checkpoint (model.name != 'pretrained')")
