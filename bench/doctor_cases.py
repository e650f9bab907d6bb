"""The doctor benchmark: faulty training setups, each with one real pathology, and healthy ones,
over several seeds; `hone.doctor.diagnose` on every run, and each diagnosis's fix applied.

Every faulty case carries a `verify` check that measures its pathology without the doctor
(bench/doctor_data.py: each step's loss and each layer's gradient norm recorded while training,
dead and saturated units counted on the reloaded model), so a setup that stops producing its
pathology fails loudly instead of testing nothing.

Run:  .venv/bin/python bench/doctor_cases.py                  # every case, seeds 0 1 2, fixes
      .venv/bin/python bench/doctor_cases.py --only dead-digits-adam-lr --seeds 0 --verify-only

Prints the verify checks, a table per case and the totals against the goals, writes
results.json in --out and prints a Markdown block for BENCHMARKS.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: one thread per worker process

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.doctor_data import (  # noqa: E402
    Check,
    Probe,
    barely_moves,
    dead,
    exploding,
    initial_loss_above,
    loss_rises,
    non_finite,
    oscillates,
    overfits,
    saturated,
    stalls,
    unscaled_inputs,
    vanishing,
    write_csvs,
)
from hone.doctor.findings import IDS  # noqa: E402
from hone.run_files import RunFiles  # noqa: E402

# ---------------------------------------------------------------- cases


@dataclass
class Case:
    """One training setup: a recipe with overrides, and the pathology it has (None: healthy).
    `reference` names the healthy case whose metric a fixed run is compared to; `verify`
    checks, without the doctor, that the pathology is there."""

    name: str
    recipe: str
    overrides: list[str]
    expected: str | None
    reference: str
    verify: Check | None = field(default=None, repr=False)


def flags(text: str) -> list[str]:
    """'--a=1 --b=2' -> ['--a=1', '--b=2']: a case's own overrides on one line."""
    return text.split()


QUIET = flags("--log.tensorboard=false --log.progress=off")
# Every base sets max_steps and eval_every for about 10 evaluations; later overrides win.
# digits MLP (1257 training images, 64 pixels, 10 classes): 400 steps, ~0.5 s.
DIGITS = [*QUIET, *flags("--train.max_epochs=0 --train.max_steps=400 --train.eval_every=40")]
DIGITS_SGD = [*DIGITS, *flags("--optim.name=sgd --schedule.name=constant")]
# synthetic linear regression (700 training samples, 5 features), SGD: 300 steps.
LINREG = [*QUIET, *flags("--train.max_epochs=0 --train.max_steps=300 --train.eval_every=30")]
# the char GPT, tiny: 1 block of width 32, context 32, batch 16, 200 steps, ~1.5 s.
GPT = [
    *QUIET,
    *flags("--model.n_layer=1 --model.n_head=2 --model.n_embd=32 --model.block_size=32"),
    *flags("--train.batch_size=16 --train.max_steps=200 --train.max_seconds=0"),
    *flags("--train.eval_every=20 --train.eval_batches=4 --train.sample_tokens=0"),
    *flags("--schedule.warmup_steps=20 --log.every=10"),
]
# breast cancer CSV (398 training rows, 30 features, 2 classes), MLP 2 x 32: 300 steps.
CSV = [
    *QUIET,
    *flags("--data.name=csv --data.path={data}/breast_cancer.csv"),
    *flags("--train.max_epochs=0 --train.max_steps=300 --train.eval_every=30"),
    *flags("--model.width=32 --model.dropout=0"),
]
# A wide MLP on a tiny training split, without dropout or weight decay, for 600 steps.
TINY_SPLIT = flags(
    "--data.val_fraction=0.5 --model.dropout=0 --optim.weight_decay=0 --schedule.name=constant "
    "--train.max_steps=600 --train.eval_every=30"
)

HEALTHY: list[Case] = [
    Case("healthy-digits", "mlp-digits", DIGITS, None, "healthy-digits"),
    Case(
        "healthy-digits-sgd-momentum",
        "mlp-digits",
        [*DIGITS_SGD, *flags("--optim.lr=0.05 --optim.momentum=0.9")],
        None,
        "healthy-digits",
    ),
    Case(
        "healthy-digits-batch8",
        "mlp-digits",
        [*DIGITS, "--train.batch_size=8"],
        None,
        "healthy-digits",
    ),
    # Stops on its own once the validation loss has not improved for 3 evaluations.
    Case(
        "healthy-digits-early-stop",
        "mlp-digits",
        [*DIGITS, *flags("--train.max_steps=1500 --train.patience=3")],
        None,
        "healthy-digits",
    ),
    Case(
        "healthy-digits-tanh-xavier",
        "mlp-digits",
        [*DIGITS, *flags("--model.activation=tanh --model.init=xavier_normal")],
        None,
        "healthy-digits",
    ),
    Case("healthy-linreg", "linreg", LINREG, None, "healthy-linreg"),
    Case("healthy-gpt", "gpt-shakespeare-char", GPT, None, "healthy-gpt"),
    Case("healthy-csv", "mlp-digits", CSV, None, "healthy-csv"),
]

# Each comment says why the setup has its pathology; the numbers are measured by `verify`.
FAULTY: list[Case] = [
    # sigmoid' <= 1/4 at every layer: 10 layers shrink the first layer's gradient ~10^8 times.
    Case(
        "vanishing-digits-deep-sigmoid",
        "mlp-digits",
        [
            *DIGITS_SGD,
            *flags("--model.depth=10 --model.width=64 --model.activation=sigmoid"),
            *flags("--model.dropout=0 --optim.lr=0.05"),
        ],
        "vanishing_gradients",
        "healthy-digits",
        vanishing(),
    ),
    Case(
        "vanishing-csv-deep-sigmoid",
        "mlp-digits",
        [
            *CSV,
            *flags("--model.depth=10 --model.activation=sigmoid"),
            *flags("--optim.name=sgd --optim.lr=0.05 --schedule.name=constant"),
        ],
        "vanishing_gradients",
        "healthy-csv",
        vanishing(),
    ),
    # tanh with weights of std 1.6/sqrt(width) is just inside the chaotic phase: the forward
    # signal stays bounded (few units saturate, the step-0 loss is near ln(10)), but each layer
    # multiplies the backward signal by ~1.09: over 48 layers the first layer gets 10-70x the
    # last one's gradient, and the gradient norm is 20-100x a healthy net's all run long
    # (with SGD at lr 1e-3; a larger lr wrecks the net in one step and the sign is gone). A
    # ReLU net cannot show this: its forward and backward gains are one factor, so a large
    # init there is a huge step-0 loss, i.e. bad initialization.
    Case(
        "exploding-digits-deep-tanh",
        "mlp-digits",
        [
            *DIGITS_SGD,
            *flags("--model.depth=48 --model.width=64 --model.activation=tanh"),
            *flags("--model.init=normal --model.init_std=0.2 --model.dropout=0"),
            "--optim.lr=1e-3",
        ],
        "exploding_gradients",
        "healthy-digits",
        exploding(),
    ),
    # Adam at 50x the usual lr drives most ReLU pre-activations negative on every input; those
    # units never get a gradient again (the loss still falls, on the units left).
    Case(
        "dead-digits-adam-lr",
        "mlp-digits",
        [*DIGITS, *flags("--model.dropout=0 --optim.lr=0.15")],
        "dead_units",
        "healthy-digits",
        dead(),
    ),
    # The same for tanh: large steps grow the weights until the units sit at +-1.
    Case(
        "saturated-digits-tanh-adam-lr",
        "mlp-digits",
        [*DIGITS, *flags("--model.dropout=0 --model.activation=tanh --optim.lr=0.3")],
        "saturated_units",
        "healthy-digits",
        saturated(),
    ),
    # Weights of std 1 instead of ~1/sqrt(fan_in): logits in the hundreds at step 0.
    Case(
        "bad-init-digits-std1",
        "mlp-digits",
        [*DIGITS, *flags("--model.init=normal --model.init_std=1.0")],
        "bad_initialization",
        "healthy-digits",
        initial_loss_above(5),
    ),
    # Embeddings (tied with the head) of std 1 instead of 0.02: the step-0 loss is ~3x ln(65).
    Case(
        "bad-init-gpt-std1",
        "gpt-shakespeare-char",
        [*GPT, *flags("--model.init=normal --model.init_std=1.0")],
        "bad_initialization",
        "healthy-gpt",
        initial_loss_above(2),
    ),
    # A linear softmax model can neither die nor saturate: lr 20 only overshoots, and the loss
    # climbs to 20x ln(10).
    Case(
        "lr-high-digits-logistic-sgd",
        "mlp-digits",
        [*DIGITS_SGD, *flags("--model.name=logistic --optim.lr=20")],
        "lr_too_high",
        "healthy-digits",
        loss_rises(),
    ),
    # Full-batch gradient descent just past 2 / (largest Hessian eigenvalue, ~2.3): the error
    # along the top eigenvector grows ~7% a step, and stays finite for the 300 steps.
    Case(
        "lr-high-linreg-gd",
        "linreg",
        [*LINREG, *flags("--optim.name=gd --optim.lr=0.88")],
        "lr_too_high",
        "healthy-linreg",
        loss_rises(),
    ),
    # Adam at lr 1 without clipping or decay: the loss leaps from ln(65) to 4-6x that.
    Case(
        "lr-high-gpt-adam",
        "gpt-shakespeare-char",
        [*GPT, *flags("--optim.lr=1.0 --train.clip_norm=0 --schedule.name=constant")],
        "lr_too_high",
        "healthy-gpt",
        loss_rises(),
    ),
    Case(
        "lr-low-digits-adam",
        "mlp-digits",
        [*DIGITS, *flags("--optim.lr=1e-6 --schedule.name=constant")],
        "lr_too_low",
        "healthy-digits",
        barely_moves(0.05),
    ),
    Case(
        "lr-low-linreg-sgd",
        "linreg",
        [*LINREG, "--optim.lr=3e-5"],
        "lr_too_low",
        "healthy-linreg",
        barely_moves(0.1),
    ),
    Case(
        "lr-low-csv-adam",
        "mlp-digits",
        [*CSV, *flags("--optim.lr=1e-5 --schedule.name=constant")],
        "lr_too_low",
        "healthy-csv",
        barely_moves(0.05),
    ),
    # Momentum 0.99 carries ~100 steps of velocity: the weights overshoot the minimum and swing
    # back and forth around it, the swings decaying slowly.
    Case(
        "oscillation-linreg-momentum",
        "linreg",
        [*LINREG, *flags("--optim.lr=0.02 --optim.momentum=0.99 --log.every=5")],
        "oscillation",
        "healthy-linreg",
        oscillates(),
    ),
    # The same on digits, with a linear softmax model that can neither die nor saturate.
    Case(
        "oscillation-digits-momentum",
        "mlp-digits",
        [
            *DIGITS_SGD,
            *flags("--model.name=logistic --optim.lr=0.1 --optim.momentum=0.99 --log.every=5"),
        ],
        "oscillation",
        "healthy-digits",
        oscillates(),
    ),
    # All weights ~0.01 and biases 0: the origin is a saddle point where every gradient is
    # tiny; SGD needs about half the run to leave it, the loss flat at ln(10) meanwhile. (With
    # the default biases instead, half the ReLU units would start dead.)
    Case(
        "plateau-digits-small-init",
        "mlp-digits",
        [
            *DIGITS_SGD,
            *flags("--model.init=normal --model.init_std=0.01 --model.zero_bias=true"),
            *flags("--model.dropout=0 --optim.lr=0.1"),
        ],
        "plateau",
        "healthy-digits",
        stalls(min_level=1.0),
    ),
    # A step schedule that cuts the lr 1000x after 20 steps: stuck near the unigram loss.
    Case(
        "plateau-gpt-step-decay",
        "gpt-shakespeare-char",
        [
            *GPT,
            *flags("--schedule.name=step --schedule.step_size=20 --schedule.gamma=0.001"),
            "--schedule.min_lr=0",
        ],
        "plateau",
        "healthy-gpt",
        stalls(min_level=3.0),
    ),
    # 180 training images (val 50%, test 40%) and 512 units: memorized within ~60 steps, after
    # which the validation loss climbs as the logits keep growing.
    Case(
        "overfitting-digits-tiny-split",
        "mlp-digits",
        [
            *DIGITS,
            *TINY_SPLIT,
            *flags("--data.test_fraction=0.4 --model.width=512 --optim.lr=1e-3"),
        ],
        "overfitting",
        "healthy-digits",
        overfits(),
    ),
    # 114 training rows and 256 units.
    Case(
        "overfitting-csv-tiny-split",
        "mlp-digits",
        [
            *CSV,
            *TINY_SPLIT,
            *flags("--data.test_fraction=0.3 --model.width=256 --train.batch_size=16"),
        ],
        "overfitting",
        "healthy-csv",
        overfits(),
    ),
    # Tumour areas in the thousands next to fractal dimensions near 0.06, fed unscaled.
    Case(
        "input-scale-csv-raw",
        "mlp-digits",
        [*CSV, "--data.normalize=none"],
        "input_scale",
        "healthy-csv",
        unscaled_inputs(),
    ),
    # SGD at lr 10 (linreg) and 1000 (digits): the loss is inf or NaN within ~20 steps, the NaN
    # guard skips those steps, and with no checkpoint to roll back to the run ends (exit code 3).
    Case(
        "non-finite-linreg-sgd",
        "linreg",
        [*LINREG, "--optim.lr=10"],
        "non_finite",
        "healthy-linreg",
        non_finite(),
    ),
    Case(
        "non-finite-digits-sgd",
        "mlp-digits",
        [*DIGITS_SGD, *flags("--model.dropout=0 --optim.lr=1000")],
        "non_finite",
        "healthy-digits",
        non_finite(),
    ),
]

CASES: list[Case] = HEALTHY + FAULTY

BY_NAME = {case.name: case for case in CASES}
assert {case.expected for case in FAULTY} == set(IDS), "every id needs a faulty case"
GOALS = {"detection": 15 / 16, "top1": 13 / 16, "stable": 0.9, "fix": 10 / 16}


# ---------------------------------------------------------------- one run


Runs = dict[tuple[str, int], dict[str, Any]]  # (case, seed) -> a run's record


@dataclass
class Job:
    """One training run of the bench, done by `run_job` in a worker process."""

    case: str
    seed: int
    run_dir: str
    data_dir: str
    fix: list[str] = field(default_factory=list)  # a finding's overrides, applied last
    extra: list[str] = field(default_factory=list)  # --override, on every run
    verify: bool = True
    diagnose: bool = True


def _diagnose() -> Callable[[Path], dict[str, Any]] | None:
    """hone.doctor.diagnose, or None where this hone does not have it yet."""
    try:
        from hone.doctor import diagnose
    except ImportError:
        return None
    return diagnose


def _score(summary: dict[str, Any]) -> tuple[float, str]:
    """(value, direction) a fix is judged by: validation accuracy for classification, the
    validation loss otherwise (an r2 or perplexity ratio would not mean '90% as good')."""
    from hone.metrics import direction

    key = "best_val_metric" if summary.get("metric") == "accuracy" else "best_val_loss"
    value = summary.get(key)
    name = "val_accuracy" if key == "best_val_metric" else "val_loss"
    return (math.nan if value is None else float(value)), direction(name)


def run_job(job: Job) -> dict[str, Any]:
    """Train one case at one seed (plus a fix), verify, diagnose; a JSON-ready record."""
    import torch

    from hone.config import load_config
    from hone.engine.trainer import Trainer
    from hone.errors import TrainingAborted

    torch.set_num_threads(1)
    case, run_dir = BY_NAME[job.case], Path(job.run_dir)
    overrides = [o.format(data=job.data_dir) for o in case.overrides]
    overrides += [*job.extra, f"train.seed={job.seed}", *job.fix]  # later ones win
    overrides = [o.removeprefix("--") for o in overrides]
    record: dict[str, Any] = {"case": job.case, "seed": job.seed, "run_dir": job.run_dir}
    record["fix"] = job.fix
    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.perf_counter()
    probe = Probe()
    try:
        cfg = load_config(case.recipe, overrides)
        Trainer(config=cfg, run_dir=run_dir, observers=[probe]).fit()
    except TrainingAborted as error:  # non-finite beyond rollbacks: the run is still read
        record["aborted"] = str(error)
    except Exception as error:  # one broken setup must not stop the bench
        record["error"] = f"{type(error).__name__}: {error}"
        return record
    finally:
        if run_dir.is_dir():
            probe.save(run_dir)
    record["seconds"] = round(time.perf_counter() - start, 2)
    summary_path = RunFiles(run_dir).summary
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    record["score"], record["direction"] = _score(summary)
    if job.verify and case.verify is not None:
        try:
            record["verified"], record["evidence"] = case.verify(run_dir)
        except Exception as error:  # noqa: BLE001 - a check that cannot run has failed
            record["verified"], record["evidence"] = False, f"{type(error).__name__}: {error}"
    diagnose = _diagnose() if job.diagnose else None
    if diagnose is not None:
        try:
            report = diagnose(run_dir)
        except Exception as error:  # noqa: BLE001 - counted as not diagnosed, and shown
            record["diagnose_error"] = f"{type(error).__name__}: {error}"
            return record
        record["findings"], record["healthy"] = report["findings"], report["healthy"]
    return record


def verdict(record: dict[str, Any]) -> str:
    """A run's verdict: the first finding's id when there is an error finding, else healthy."""
    findings = record.get("findings") or []
    if not any(f["severity"] == "error" for f in findings):
        return "healthy"
    return findings[0]["id"]


# ---------------------------------------------------------------- the bench


def run_all(jobs: list[Job], workers: int, title: str) -> list[dict[str, Any]]:
    """Run jobs on `workers` processes (one torch thread each) with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    if not jobs:
        return []
    records = []
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    # spawn: each worker imports torch afresh and sets its one thread before any work.
    with Progress(*columns) as progress, multiprocessing.get_context("spawn").Pool(workers) as pool:
        task = progress.add_task(title, total=len(jobs))
        for record in pool.imap_unordered(run_job, jobs):
            records.append(record)
            progress.update(task, advance=1, description=f"{title}: {record['case']}")
    return sorted(records, key=lambda r: (r["case"], r["seed"]))


def fix_jobs(
    faulty: list[Case], runs: Runs, seeds: list[int], make: Callable[..., Job]
) -> tuple[list[Job], Runs]:
    """A re-run of each faulty case with its first finding's fix appended to its overrides;
    a record saying why not where the doctor suggested none."""
    jobs, missing = [], {}
    for case in faulty:
        for seed in seeds:
            findings = runs[case.name, seed].get("findings") or []
            if findings and findings[0].get("fix"):
                jobs.append(make(case, seed, "fix", list(findings[0]["fix"])))
            else:
                missing[case.name, seed] = {"case": case.name, "seed": seed, "why": "no fix"}
    return jobs, missing


def fix_reaches(fixed: dict[str, Any], reference: dict[str, Any]) -> bool:
    """The fixed run reaches 90% of the healthy reference's metric at the same seed."""
    value, healthy = fixed.get("score", math.nan), reference.get("score", math.nan)
    sense = reference.get("direction")
    if not (math.isfinite(value) and math.isfinite(healthy)):
        return False
    return value >= 0.9 * healthy if sense == "max" else value <= healthy / 0.9


def case_row(
    case: Case, runs: Runs, fixes: Runs, seeds: list[int], fix_seeds: list[int]
) -> dict[str, Any]:
    """One case over its seeds: verdicts, verify checks and fixes, with the counts."""
    records = [runs[case.name, seed] for seed in seeds]
    diagnosed = [r for r in records if "findings" in r]
    verdicts = [verdict(r) if "findings" in r else "-" for r in records]
    pairs = list(itertools.combinations([v for v in verdicts if v != "-"], 2))
    expected = case.expected or "healthy"
    row: dict[str, Any] = {"case": case.name, "expected": expected, "seeds": seeds}
    row |= {"verdicts": verdicts, "findings": [r.get("findings") for r in records]}
    row["errors"] = [
        r.get("error") or r.get("diagnose_error") or r.get("aborted", "")[:60] for r in records
    ]
    row["verify"] = [[r.get("verified"), r.get("evidence", "")] for r in records]
    row["counts"] = {
        "runs": len(diagnosed),
        "errors": sum(not r["healthy"] for r in diagnosed),  # runs with an error finding
        "top1": sum(v == expected for v in verdicts),
        "same_pairs": sum(a == b for a, b in pairs),
        "pairs": len(pairs),
        "verified": sum(bool(r.get("verified")) for r in records) if case.verify else 0,
        "verify_runs": len(records) if case.verify else 0,
    }
    row["stable"] = f"{row['counts']['same_pairs']}/{len(pairs)}"
    row["fix"] = []
    for seed in fix_seeds if case.expected else []:
        fixed = fixes.get((case.name, seed), {})
        reference = runs[case.reference, seed]
        ok = "score" in fixed and fix_reaches(fixed, reference)
        row["fix"].append(
            {
                "seed": seed,
                "fix": fixed.get("fix", []),
                "ok": ok,
                "score": fixed.get("score"),
                "healthy": reference.get("score"),
                "why": fixed.get("why") or fixed.get("error", ""),
            }
        )
    return row


def tally(
    cases: list[Case], runs: Runs, fixes: Runs, seeds: list[int], fix_seeds: list[int]
) -> dict[str, Any]:
    """Per-case rows and the totals against the goals."""
    rows = [case_row(case, runs, fixes, seeds, fix_seeds) for case in cases]
    faulty = [row for row in rows if row["expected"] != "healthy"]
    healthy = [row for row in rows if row["expected"] == "healthy"]

    def total(group: list[dict[str, Any]], key: str) -> int:
        return sum(row["counts"][key] for row in group)

    totals = {
        "num_faulty": len(faulty),
        "num_healthy": len(healthy),
        "faulty_runs": total(faulty, "runs"),
        "detected": total(faulty, "errors"),
        "top1": total(faulty, "top1"),
        "healthy_runs": total(healthy, "runs"),
        "healthy_errors": total(healthy, "errors"),
        "same_pairs": total(rows, "same_pairs"),
        "pairs": total(rows, "pairs"),
        "verified": total(faulty, "verified"),
        "verify_runs": total(faulty, "verify_runs"),
        "fixed": sum(f["ok"] for row in faulty for f in row["fix"]),
        "fix_tries": sum(len(row["fix"]) for row in faulty),
    }
    return {"rows": rows, "totals": totals}


def _ratio(a: int, b: int) -> str:
    return f"{a}/{b} ({a / b:.0%})" if b else "-"


def goal_lines(t: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(measure, value, goal, met) for the totals; the goals are fractions of the runs."""

    def line(name: str, part: str, whole: str, goal: str, met: bool) -> tuple[str, str, str, bool]:
        return name, _ratio(t[part], t[whole]), goal, bool(t[whole]) and met

    def share(part: str, whole: str) -> float:
        return t[part] / t[whole] if t[whole] else 0.0

    return [
        line("verify checks passed (faulty runs)", "verified", "verify_runs", "all",
             t["verified"] == t["verify_runs"]),
        line("detection on faulty runs (any error)", "detected", "faulty_runs", ">= 15/16",
             share("detected", "faulty_runs") >= GOALS["detection"]),
        line("top-1 diagnosis correct", "top1", "faulty_runs", ">= 13/16",
             share("top1", "faulty_runs") >= GOALS["top1"]),
        line("healthy runs with an error finding", "healthy_errors", "healthy_runs", "0",
             t["healthy_errors"] == 0),
        line("same verdict across seeds (pairs)", "same_pairs", "pairs", ">= 90%",
             share("same_pairs", "pairs") >= GOALS["stable"]),
        line("fix reaches >= 90% of healthy", "fixed", "fix_tries", ">= 10/16",
             share("fixed", "fix_tries") >= GOALS["fix"]),
    ]  # fmt: skip


def print_tables(result: dict[str, Any], diagnosed: bool) -> None:
    """The verify checks per run, the cases with their verdicts and fixes, the totals."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 150))
    checks = Table(
        title="verify checks: each faulty setup's pathology, measured without the doctor"
    )
    for column in ("case", "seed", "ok", "evidence"):
        checks.add_column(column)
    table = Table(title="doctor benchmark")
    for column in ("case", "expected", "verdict per seed", "stable", "verified", "fix (seed: ok)"):
        table.add_column(column)
    for row in result["rows"]:
        verdicts = " ".join(
            f"[green]{v}[/]" if v == row["expected"] else f"[red]{v}[/]" for v in row["verdicts"]
        )
        verified = [ok for ok, _ in row["verify"] if ok is not None]
        fixes = " ".join(f"{f['seed']}:{'ok' if f['ok'] else 'no'}" for f in row.get("fix", []))
        table.add_row(
            row["case"],
            row["expected"],
            verdicts if diagnosed else "-",
            row["stable"] if diagnosed else "-",
            f"{sum(verified)}/{len(verified)}" if verified else "",
            fixes,
        )
        for seed, (ok, evidence), error in zip(
            row["seeds"], row["verify"], row["errors"], strict=True
        ):
            if ok is not None or error:
                mark = "[green]ok[/]" if ok else "[red]FAIL[/]"
                checks.add_row(
                    row["case"],
                    str(seed),
                    mark,
                    evidence + (f" [yellow]({error})[/]" if error else ""),
                )
    console.print(checks)
    console.print(table)
    goals = Table(title="totals against the goals")
    for column in ("measure", "value", "goal", "met"):
        goals.add_column(column)
    for name, value, goal, ok in goal_lines(result["totals"]):
        goals.add_row(name, value, goal, "[green]yes[/]" if ok else "[red]no[/]")
    console.print(goals)


def markdown(result: dict[str, Any], args: argparse.Namespace, seconds: float) -> str:
    """The results as a BENCHMARKS.md section: totals against the goals, then each case."""
    command = " ".join(["bench/doctor_cases.py", *sys.argv[1:]])
    lines = [
        "## Doctor: faulty and healthy training setups",
        "",
        f"Command: `.venv/bin/python {command}` "
        f"({result['totals']['num_faulty']} faulty and {result['totals']['num_healthy']} healthy "
        f"setups, {len(args.seeds)} seeds, {args.workers} workers, {seconds / 60:.1f} minutes).",
        "",
        "| measure | value | goal | met |",
        "| --- | ---: | --- | --- |",
    ]
    lines += [
        f"| {n} | {v} | {g} | {'yes' if ok else 'no'} |"
        for n, v, g, ok in goal_lines(result["totals"])
    ]
    lines += ["", "| case | expected | verdict per seed | fix |", "| --- | --- | --- | --- |"]
    for row in result["rows"]:
        fixes = "; ".join(
            f"`{' '.join(f['fix']) or 'none'}` {'ok' if f['ok'] else 'no'}"
            for f in row.get("fix", [])
        )
        lines.append(
            f"| {row['case']} | {row['expected']} | {', '.join(row['verdicts'])} | {fixes} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/doctor-bench", help="run directories and results")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME", help="only these cases")
    parser.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    parser.add_argument("--skip-fix", action="store_true", help="do not re-run with the fixes")
    parser.add_argument("--fix-seeds", type=int, nargs="+", help="default: the first seed")
    parser.add_argument("--verify-only", action="store_true", help="train and verify; no doctor")
    parser.add_argument(
        "--override", action="append", default=[], metavar="A.B=V", help="on every run"
    )
    args = parser.parse_args()
    unknown = [name for name in args.only if name not in BY_NAME]
    if unknown:
        parser.error(f"unknown case {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    cases = [c for c in CASES if not args.only or c.name in args.only]
    diagnose = None if args.verify_only else _diagnose()
    if not args.verify_only and diagnose is None:
        print("hone.doctor.diagnose is not there yet: training and verifying only")
    fix_seeds = (args.fix_seeds or args.seeds[:1]) if diagnose and not args.skip_fix else []
    # A fix is compared to its reference healthy case at the same seed: train those too.
    references = {c.reference for c in cases if c.expected and fix_seeds}
    to_run = cases + [BY_NAME[n] for n in sorted(references - {c.name for c in cases})]
    out = Path(args.out)
    data_dir = (out / "data").resolve()
    write_csvs(data_dir)

    def make(case: Case, seed: int, kind: str, fix: list[str] | None = None) -> Job:
        """A job of `kind` 'runs' (verified, diagnosed) or 'fix' (trained only)."""
        first = kind == "runs"
        return Job(
            case.name, seed, str(out / kind / f"{case.name}-s{seed}"), str(data_dir),
            fix=fix or [], extra=args.override, verify=first, diagnose=first and bool(diagnose),
        )  # fmt: skip

    start = time.perf_counter()
    jobs = [make(case, seed, "runs") for case in to_run for seed in args.seeds]
    runs = {(r["case"], r["seed"]): r for r in run_all(jobs, args.workers, "train")}
    jobs, fixes = fix_jobs([c for c in cases if c.expected], runs, fix_seeds, make)
    fixes |= {(r["case"], r["seed"]): r for r in run_all(jobs, args.workers, "fix")}
    seconds = time.perf_counter() - start
    result = tally(cases, runs, fixes, args.seeds, fix_seeds)
    result |= {"seconds": round(seconds, 1), "seeds": args.seeds, "overrides": args.override}
    result |= {"runs": list(runs.values()), "fixes": list(fixes.values())}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    print_tables(result, diagnose is not None)
    print(f"\n{len(runs)} runs and {len(jobs)} fixes in {seconds:.0f} s; {out / 'results.json'}\n")
    print(markdown(result, args, seconds))


if __name__ == "__main__":
    main()
