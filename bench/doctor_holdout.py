"""A held-out doctor benchmark: faulty and healthy setups unlike those of bench/doctor_cases.py
(other models, optimizers, data sets, schedules, batch sizes, depths), to measure how the
doctor's rules generalize. Nobody tunes the rules to these cases before they are measured.

The machinery is doctor_cases.py's (Case, Job, run_job, the fix re-runs, the tables) and the
checks are doctor_data.py's, plus three written here (a regression's step-0 MSE; for
oscillation, validation-loss swings and a loss that still comes down): each faulty case's
pathology is measured without the doctor. New data: scikit-learn's wine, iris and diabetes
tables and a 2,500-character slice of Shakespeare, written into --out/data.

Run:  .venv/bin/python bench/doctor_holdout.py                  # every case, seeds 0 1 2, fixes
      .venv/bin/python bench/doctor_holdout.py --only dead-wine-adam-lr --seeds 0 --verify-only
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: one thread per worker process

import argparse  # noqa: E402
import csv  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import doctor_cases  # noqa: E402
from bench.doctor_cases import (  # noqa: E402
    QUIET,
    Case,
    Job,
    fix_jobs,
    flags,
    markdown,
    print_tables,
    run_all,
    tally,
    verdict,
)
from bench.doctor_data import (  # noqa: E402
    Check,
    all_of,
    barely_moves,
    dead,
    exploding,
    initial_loss_above,
    loss_rises,
    non_finite,
    oscillates,
    overfits,
    read_events,
    read_probe,
    saturated,
    stalls,
    unscaled_inputs,
    vanishing,
    write_csvs,
)
from hone.run_files import RunFiles  # noqa: E402

# ---------------------------------------------------------------- data


def _write_table(path: Path, names: list[str], rows: Any, targets: Any, target: str) -> None:
    """A CSV file (header, features, target last), written atomically: parallel workers never
    read half a file."""
    if path.is_file():
        return
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*names, target])
        for row, value in zip(rows, targets, strict=True):
            writer.writerow([*(f"{v:.6g}" for v in row), f"{value:.6g}"])
    tmp.replace(path)


def write_holdout_data(data_dir: Path) -> None:
    """The held-out cases' files in data_dir.

    wine: 178 wines, 13 features whose standard deviations run from 0.12 (nonflavanoid
    phenols) to 314 (proline), 3 classes. iris: 150 flowers, 4 features, 3 classes;
    iris_scaled the same with sepal width (the least telling feature) in units of 1e-4 cm,
    i.e. multiplied by 1e4.
    diabetes: 442 patients, 10 raw features, disease progression after a year as a z-score
    (regression: a healthy net's loss starts near 1). tiny.txt: the first 2,500 characters of
    the Shakespeare corpus, for a language model that can memorize its training text.
    """
    import numpy as np
    from sklearn.datasets import load_diabetes, load_iris, load_wine  # type: ignore[import-untyped]

    from hone.data.text import shakespeare_text

    write_csvs(data_dir)  # also creates data_dir
    wine, iris = load_wine(), load_iris()
    clean = [name.replace(" (cm)", "").replace(" ", "_") for name in iris.feature_names]
    wine_names = [name.replace("/", "_") for name in wine.feature_names]
    _write_table(data_dir / "wine.csv", wine_names, wine.data, wine.target, "cultivar")
    _write_table(data_dir / "iris.csv", clean, iris.data, iris.target, "species")
    scaled = iris.data * np.array([1.0, 1e4, 1.0, 1.0])
    _write_table(data_dir / "iris_scaled.csv", clean, scaled, iris.target, "species")
    diabetes = load_diabetes(scaled=False)
    z = (diabetes.target - diabetes.target.mean()) / diabetes.target.std()
    _write_table(data_dir / "diabetes.csv", diabetes.feature_names, diabetes.data, z, "progression")
    tiny = data_dir / "tiny.txt"
    if not tiny.is_file():
        tmp = tiny.with_suffix(".tmp")
        tmp.write_text(shakespeare_text()[:2500])
        tmp.replace(tiny)


# ---------------------------------------------------------------- checks of its own


def target_variance(run_dir: Path) -> float:
    """The variance of the training targets: the MSE of predicting their mean."""
    from hone.config import load_config
    from hone.data import build_data

    cfg = load_config(str(RunFiles(run_dir).config))
    y = build_data(cfg).train[1]  # type: ignore[attr-defined]
    return float(y.float().var())


def initial_mse_above(factor: float) -> Check:
    """The first step's MSE is factor x the variance of the targets (what predicting their
    mean costs): the initial predictions are far off the targets' scale."""

    def check(run: Path) -> tuple[bool, str]:
        first, variance = read_probe(run)["losses"][0], target_variance(run)
        ratio = first / variance
        return ratio >= factor, f"step-0 MSE {first:.3g} = {ratio:.0f} x var(y) (>= {factor:g})"

    return check


def comes_down(max_ratio: float = 1.0) -> Check:
    """The median training loss of the run's last quarter is below max_ratio x the first
    step's loss: however it swings, the run still learns (an lr far too high would not)."""

    def check(run: Path) -> tuple[bool, str]:
        first = read_probe(run)["losses"][0]
        losses = [e["loss"] for e in read_events(run, "train")]
        tail = statistics.median(losses[-max(len(losses) // 4, 1) :])
        ok = tail < max_ratio * first
        return ok, f"train loss {first:.3g} at step 0, median of the last quarter {tail:.3g}"

    return check


def val_swings(min_swing: float = 0.2, min_reversals: int = 2) -> Check:
    """The validation loss (the same samples each time: no batch noise) moves by more than
    min_swing of its level and reverses direction at least min_reversals times. Healthy runs
    here fall steadily; oscillates() alone also counts the batch noise of small batches."""

    def check(run: Path) -> tuple[bool, str]:
        losses = [e["loss"] for e in read_events(run, "val")]
        moves = [b - a for a, b in itertools.pairwise(losses) if abs(b - a) > min_swing * a]
        reversals = sum(a * b < 0 for a, b in itertools.pairwise(moves))
        text = f"val loss: {reversals} reversals of moves > {min_swing:.0%} (>= {min_reversals})"
        return reversals >= min_reversals, text

    return check


# ---------------------------------------------------------------- cases


def steps(num_steps: int, evaluations: int = 10) -> list[str]:
    """A step budget with `evaluations` validation passes spread over it."""
    return flags(
        f"--train.max_epochs=0 --train.max_steps={num_steps} "
        f"--train.eval_every={num_steps // evaluations}"
    )


# digits MLP (recipe mlp-digits: AdamW 3e-3, cosine), 300 steps.
DIGITS = [*QUIET, *steps(300)]
DIGITS_SGD = [*DIGITS, *flags("--optim.name=sgd --schedule.name=constant")]
# the CNN recipe (16, 32 channels, AdamW 3e-3, cosine, shift augmentation), 250 steps.
CNN = [*QUIET, *steps(250)]
# wine (124 training rows, 13 features, 3 classes), MLP 2 x 32, batch 32: 300 steps.
WINE = [
    *QUIET,
    *flags("--data.name=csv --data.path={data}/wine.csv --train.batch_size=32"),
    *flags("--model.width=32 --model.dropout=0"),
    *steps(300),
]
# iris (106 training rows, 4 features, 3 classes), batch 16: 200 steps; IRIS_MLP 2 x 16.
IRIS = [
    *QUIET,
    *flags("--data.name=csv --data.path={data}/iris.csv --train.batch_size=16"),
    *steps(200),
]
IRIS_MLP = [*IRIS, *flags("--model.width=16 --model.dropout=0")]
# diabetes (310 training rows, 10 features, a z-scored target), MSE, batch 32: 300 steps;
# DIABETES_MLP with an MLP 2 x 32.
DIABETES = [
    *QUIET,
    *flags("--data.name=csv --data.path={data}/diabetes.csv --data.task=regression"),
    *flags("--loss.name=mse --train.batch_size=32"),
    *steps(300),
]
DIABETES_MLP = [*DIABETES, *flags("--model.width=32 --model.dropout=0")]
# synthetic linear regression with 10 features and 800 samples, SGD 0.05: 300 steps.
LINREG = [*QUIET, *flags("--data.num_features=10 --data.num_samples=800"), *steps(300)]
# the char GPT: 2 blocks of width 48 (4 heads), context 32, batch 16, AdamW 2e-3, 300 steps.
GPT = [
    *QUIET,
    *flags("--model.n_layer=2 --model.n_head=4 --model.n_embd=48 --model.block_size=32"),
    *flags("--train.batch_size=16 --train.max_seconds=0 --train.eval_batches=4"),
    *flags("--train.sample_tokens=0 --schedule.warmup_steps=30 --log.every=10"),
    "--optim.lr=2e-3",
    *steps(300),
]

HEALTHY: list[Case] = [
    Case("h-cnn-digits", "cnn-digits", CNN, None, "h-cnn-digits"),
    Case(
        "h-digits-logistic-sgd",
        "mlp-digits",
        [*DIGITS_SGD, *flags("--model.name=logistic --optim.lr=0.1")],
        None,
        "h-digits-rmsprop",
    ),
    Case(
        "h-digits-rmsprop",
        "mlp-digits",
        [*DIGITS, *flags("--optim.name=rmsprop --optim.lr=1e-3 --model.width=64")],
        None,
        "h-digits-rmsprop",
    ),
    Case(
        "h-digits-adagrad",
        "mlp-digits",
        [*DIGITS, *flags("--optim.name=adagrad --optim.lr=0.03")],
        None,
        "h-digits-rmsprop",
    ),
    Case(
        "h-digits-sgd-plain-batch32",
        "mlp-digits",
        [*DIGITS_SGD, *flags("--optim.lr=0.1 --train.batch_size=32")],
        None,
        "h-digits-rmsprop",
    ),
    Case(
        "h-digits-deep-relu-kaiming",
        "mlp-digits",
        [*DIGITS, *flags("--model.depth=5 --model.width=64 --model.init=kaiming_normal")],
        None,
        "h-digits-rmsprop",
    ),
    Case(
        "h-digits-sigmoid-xavier",
        "mlp-digits",
        [*DIGITS, *flags("--model.activation=sigmoid --model.init=xavier_normal")],
        None,
        "h-digits-rmsprop",
    ),
    Case(
        "h-digits-dropout-cosine-warmup",
        "mlp-digits",
        [*DIGITS, *flags("--model.dropout=0.3 --schedule.warmup_steps=50 --schedule.min_lr=1e-4")],
        None,
        "h-digits-rmsprop",
    ),
    Case(
        "h-digits-batch4",
        "mlp-digits",
        [*DIGITS, *flags("--train.batch_size=4 --optim.lr=1e-3"), *steps(800)],
        None,
        "h-digits-rmsprop",
    ),
    Case(
        "h-digits-label-smoothing-accum2",
        "mlp-digits",
        [*DIGITS, *flags("--loss.label_smoothing=0.1 --train.grad_accum=2")],
        None,
        "h-digits-rmsprop",
    ),
    Case(
        "h-linreg-gd",
        "linreg",
        [*LINREG, *flags("--optim.name=gd --optim.lr=0.3")],
        None,
        "h-linreg-gd",
    ),
    Case(
        "h-linreg-adam",
        "linreg",
        [*LINREG, *flags("--optim.name=adam --optim.lr=0.05")],
        None,
        "h-linreg-gd",
    ),
    # 150 steps: at 300 the validation loss of 27 wines climbed 35-64% from step ~90 while
    # the training loss fell to 0.007 (doctor_data's overfits() held in 2 seeds of 3).
    Case(
        "h-wine-l2-short",
        "mlp-digits",
        [*WINE, "--reg.l2=1e-4", *steps(150)],
        None,
        "h-wine-l2-short",
    ),
    Case("h-iris", "mlp-digits", IRIS_MLP, None, "h-iris"),
    Case("h-diabetes-mse", "mlp-digits", DIABETES_MLP, None, "h-diabetes-mse"),
    Case(
        "h-diabetes-huber",
        "mlp-digits",
        [*DIABETES_MLP, "--loss.name=huber"],
        None,
        "h-diabetes-mse",
    ),
    Case("h-gpt-48", "gpt-shakespeare-char", GPT, None, "h-gpt-48"),
]

# Each comment says why the setup has its pathology; `verify` measures it.
FAULTY: list[Case] = [
    # Softmax regression (it can neither die nor saturate) with RMSprop at lr 1, constant:
    # every weight moves by ~1 a step, the logits grow far past the data and the loss climbs
    # from 2.3 to ~40 and stays above 10, swinging on the way (oscillates() holds too).
    Case(
        "lr-high-digits-logistic-rmsprop",
        "mlp-digits",
        [
            *DIGITS,
            *flags("--model.name=logistic --optim.name=rmsprop --optim.lr=1.0"),
            "--schedule.name=constant",
        ],
        "lr_too_high",
        "h-digits-rmsprop",
        loss_rises(),
    ),
    # Softmax regression on iris with SGD at lr 30: it overshoots, the loss climbing from ~1
    # to 5-8. (Adam at lr 1-3 on wine, and AdamW at lr 0.1 on the CNN, did not: the loss
    # still fell; at lr 1 the CNN's ReLU units die instead.)
    Case(
        "lr-high-iris-logistic-sgd",
        "mlp-digits",
        [
            *IRIS,
            *flags("--model.name=logistic --optim.name=sgd --optim.lr=30 --schedule.name=constant"),
        ],
        "lr_too_high",
        "h-iris",
        loss_rises(),
    ),
    Case(
        "lr-low-digits-sgd",
        "mlp-digits",
        [*DIGITS_SGD, "--optim.lr=1e-5"],
        "lr_too_low",
        "h-digits-rmsprop",
        barely_moves(0.05),
    ),
    Case(
        "lr-low-cnn-adamw",
        "cnn-digits",
        [*CNN, *flags("--optim.lr=1e-6 --schedule.name=constant")],
        "lr_too_low",
        "h-cnn-digits",
        barely_moves(0.05),
    ),
    # Adam at lr 2 on 124 rows: steps of ~2 a weight push most ReLU pre-activations below
    # zero on every row; those units never get a gradient again (80-90% of them; at lr 0.5
    # 40-47%). The loss spikes on the way (also a sign of the lr).
    Case(
        "dead-wine-adam-lr",
        "mlp-digits",
        [*WINE, *flags("--optim.lr=2.0 --schedule.name=constant")],
        "dead_units",
        "h-wine-l2-short",
        dead(),
    ),
    # The CNN under AdamW at lr 1: 50-80% of the conv units (channel x position) die and the
    # loss ends at ln(10), a constant prediction.
    Case(
        "dead-cnn-adam-lr",
        "cnn-digits",
        [*CNN, *flags("--optim.lr=1.0 --schedule.name=constant --data.augment_shift=0")],
        "dead_units",
        "h-cnn-digits",
        dead(),
    ),
    # Large steps grow the weights until the sigmoid / tanh units sit at their bounds (the
    # loss rises too in most seeds: the lr's other sign).
    Case(
        "saturated-wine-sigmoid-adam-lr",
        "mlp-digits",
        [*WINE, *flags("--model.activation=sigmoid --optim.lr=2.0 --schedule.name=constant")],
        "saturated_units",
        "h-wine-l2-short",
        saturated(),
    ),
    Case(
        "saturated-cnn-tanh-adam-lr",
        "cnn-digits",
        [*CNN, *flags("--model.activation=tanh --optim.lr=1.0 --schedule.name=constant")],
        "saturated_units",
        "h-cnn-digits",
        saturated(),
    ),
    # Conv weights of std 1 (fan-in 9 and 144, so ~0.3 and ~0.08 would keep the scale):
    # logits in the hundreds at step 0.
    Case(
        "bad-init-cnn-std1",
        "cnn-digits",
        [*CNN, *flags("--model.init=normal --model.init_std=1.0")],
        "bad_initialization",
        "h-cnn-digits",
        initial_loss_above(5),
    ),
    # Linear regression started with weights of std 20: the step-0 MSE is hundreds of times
    # the targets' variance (SGD then needs most of the run to come back).
    Case(
        "bad-init-linreg-std20",
        "linreg",
        [*LINREG, *flags("--model.init=normal --model.init_std=20")],
        "bad_initialization",
        "h-linreg-gd",
        initial_mse_above(20),
    ),
    # tanh, 12 layers of 64 units with weights of std 0.03 (gain ~0.24 a layer): the backward
    # signal shrinks ~0.24^11 from the head to the first layer.
    Case(
        "vanishing-digits-deep-tanh-small-init",
        "mlp-digits",
        [
            *DIGITS_SGD,
            *flags("--model.depth=12 --model.width=64 --model.activation=tanh"),
            *flags("--model.init=normal --model.init_std=0.03 --model.dropout=0 --optim.lr=0.05"),
        ],
        "vanishing_gradients",
        "h-digits-rmsprop",
        vanishing(),
    ),
    # 8 sigmoid layers under Adam: Adam rescales each weight's step, but the gradient reaching
    # the first layer is still orders of magnitude below the head's.
    Case(
        "vanishing-iris-deep-sigmoid-adam",
        "mlp-digits",
        [*IRIS_MLP, *flags("--model.depth=8 --model.activation=sigmoid --optim.lr=1e-3")],
        "vanishing_gradients",
        "h-iris",
        vanishing(),
    ),
    # tanh just inside the chaotic phase (std 1.86/sqrt(96)) over 48 layers: each layer
    # amplifies the backward signal while tanh keeps the forward one bounded (no unit is
    # saturated). At std 1.7/sqrt(96) and 40 layers it was too weak in 2 seeds of 3.
    Case(
        "exploding-wine-deep-tanh",
        "mlp-digits",
        [
            *WINE,
            *flags("--model.depth=48 --model.width=96 --model.activation=tanh"),
            *flags("--model.init=normal --model.init_std=0.19"),
            *flags("--optim.name=sgd --optim.lr=1e-3 --schedule.name=constant"),
        ],
        "exploding_gradients",
        "h-wine-l2-short",
        exploding(),
    ),
    # A linear schedule that reaches lr 0 at step 25: the net stops learning with the loss
    # still far above what it reaches.
    Case(
        "plateau-digits-linear-decay",
        "mlp-digits",
        [
            *DIGITS,
            *flags("--schedule.name=linear --schedule.warmup_steps=0 --schedule.decay_steps=25"),
            *flags("--schedule.min_lr=0 --optim.lr=1e-3"),
        ],
        "plateau",
        "h-digits-rmsprop",
        stalls(min_level=0.5),
    ),
    # lr x 0.8 every step: after ~40 steps it is 1e-4 of its start.
    Case(
        "plateau-cnn-exponential-decay",
        "cnn-digits",
        [
            *CNN,
            *flags("--schedule.name=exponential --schedule.gamma=0.8 --schedule.warmup_steps=0"),
            *flags("--schedule.min_lr=0 --optim.lr=1e-3"),
        ],
        "plateau",
        "h-cnn-digits",
        stalls(min_level=0.5),
    ),
    # 1,900 characters of training text for a 2-block GPT of width 64: from step ~90 the
    # validation loss climbs 35% while the training loss falls from 2.2 to 0.9. (A character
    # model's val/train ratio stays ~4x, short of doctor_data's 10x for classifiers.)
    Case(
        "overfitting-gpt-tiny-corpus",
        "gpt-shakespeare-char",
        [
            *GPT,
            *flags("--data.name=text --data.path={data}/tiny.txt --data.val_fraction=0.25"),
            *flags("--model.n_embd=64 --optim.lr=5e-3 --optim.weight_decay=0"),
            "--schedule.name=constant",
        ],
        "overfitting",
        "h-gpt-48",
        overfits(min_gap=3),
    ),
    # 36 training wines (val 50%, test 30%) and 256 units for 600 steps.
    Case(
        "overfitting-wine-tiny-split",
        "mlp-digits",
        [
            *WINE,
            *flags("--data.val_fraction=0.5 --data.test_fraction=0.3 --model.width=256"),
            *flags("--optim.weight_decay=0 --schedule.name=constant --train.batch_size=16"),
            *steps(600, 20),
        ],
        "overfitting",
        "h-wine-l2-short",
        overfits(),
    ),
    # Momentum 0.99 carries ~100 steps of velocity: the weights swing around the minimum,
    # the validation loss too, while the loss still comes down overall. (On wine the same
    # swings sent the validation loss up 10x, an overfitting too by doctor_data's check; at
    # lr 0.05 the diabetes regression ended far above its start, a too-high lr; the CNN at
    # lr 0.02 with augmentation swung too little to tell from batch noise.)
    Case(
        "oscillation-diabetes-linear-momentum",
        "mlp-digits",
        [
            *DIABETES,
            *flags("--model.name=linear --optim.name=sgd --optim.lr=0.01"),
            *flags("--optim.momentum=0.99 --schedule.name=constant --log.every=5"),
        ],
        "oscillation",
        "h-diabetes-mse",
        all_of(oscillates(), val_swings(), comes_down()),
    ),
    Case(
        "oscillation-cnn-momentum",
        "cnn-digits",
        [
            *CNN,
            *flags("--optim.name=sgd --optim.lr=0.03 --optim.momentum=0.99"),
            *flags("--schedule.name=constant --log.every=5"),
            *flags("--data.augment_shift=0 --model.dropout=0"),
        ],
        "oscillation",
        "h-cnn-digits",
        all_of(oscillates(), val_swings(), comes_down()),
    ),
    # SGD at lr 1e4 on the GPT, no clipping: the loss overflows within a few steps.
    Case(
        "non-finite-gpt-sgd",
        "gpt-shakespeare-char",
        [*GPT, *flags("--optim.name=sgd --optim.lr=1e4 --train.clip_norm=0")],
        "non_finite",
        "h-gpt-48",
        non_finite(),
    ),
    # MSE regression with SGD at lr 2: the error grows geometrically until it is inf.
    Case(
        "non-finite-diabetes-sgd",
        "mlp-digits",
        [*DIABETES_MLP, *flags("--optim.name=sgd --optim.lr=2 --schedule.name=constant")],
        "non_finite",
        "h-diabetes-mse",
        non_finite(),
    ),
    # Proline (std 314) beside nonflavanoid phenols (std 0.12), fed unscaled.
    Case(
        "input-scale-wine-raw",
        "mlp-digits",
        [*WINE, "--data.normalize=none"],
        "input_scale",
        "h-wine-l2-short",
        unscaled_inputs(max_accuracy=0.9),
    ),
    # Sepal width multiplied by 1e4, fed unscaled: it drowns the three telling features.
    Case(
        "input-scale-iris-one-feature",
        "mlp-digits",
        [*IRIS_MLP, *flags("--data.path={data}/iris_scaled.csv --data.normalize=none")],
        "input_scale",
        "h-iris",
        unscaled_inputs(max_accuracy=0.9),
    ),
]

CASES: list[Case] = HEALTHY + FAULTY
BY_NAME = {case.name: case for case in CASES}
assert not BY_NAME.keys() & doctor_cases.BY_NAME.keys(), "held-out names must be new"
assert {case.expected for case in FAULTY} == set(doctor_cases.IDS), "every id needs a case"
# run_job (in each spawned worker, which imports this file as its main module) looks cases up
# in doctor_cases.BY_NAME: the held-out cases join it there.
doctor_cases.BY_NAME.update(BY_NAME)


# ---------------------------------------------------------------- reporting


def first_findings(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per case and seed: the verdict and the first finding's id and severity."""
    lines = []
    for row in result["rows"]:
        for seed, found in zip(row["seeds"], row["findings"], strict=True):
            first = (found or [{}])[0]
            lines.append(
                {
                    "case": row["case"],
                    "seed": seed,
                    "expected": row["expected"],
                    "verdict": verdict({"findings": found or []}),
                    "first": f"{first.get('id', '-')} ({first.get('severity', '-')})",
                }
            )
    return lines


def print_misses(result: dict[str, Any]) -> None:
    """Every run whose verdict is not the expected one, with all of the doctor's findings and
    their evidence, for whoever works on the rules."""
    print("\n## Misses: the doctor's findings with their evidence\n")
    for row in result["rows"]:
        for seed, found, got in zip(row["seeds"], row["findings"], row["verdicts"], strict=True):
            if got == row["expected"]:
                continue
            print(f"### {row['case']} seed {seed}: expected {row['expected']}, got {got}")
            for finding in found or []:
                evidence = json.dumps(finding.get("evidence"), default=str)
                print(f"- {finding['id']} ({finding['severity']}): {evidence}")
            print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/doctor-holdout", help="run directories and results")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME", help="only these cases")
    parser.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    parser.add_argument("--skip-fix", action="store_true", help="do not re-run with the fixes")
    parser.add_argument("--fix-seeds", type=int, nargs="+", help="default: the first seed")
    parser.add_argument("--verify-only", action="store_true", help="train and verify; no doctor")
    args = parser.parse_args()
    unknown = [name for name in args.only if name not in BY_NAME]
    if unknown:
        parser.error(f"unknown case {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    cases = [c for c in CASES if not args.only or c.name in args.only]
    diagnose = None if args.verify_only else doctor_cases._diagnose()
    fix_seeds = (args.fix_seeds or args.seeds[:1]) if diagnose and not args.skip_fix else []
    references = {c.reference for c in cases if c.expected and fix_seeds}
    to_run = cases + [BY_NAME[n] for n in sorted(references - {c.name for c in cases})]
    out = Path(args.out)
    data_dir = (out / "data").resolve()
    write_holdout_data(data_dir)

    def make(case: Case, seed: int, kind: str, fix: list[str] | None = None) -> Job:
        """A job of `kind` 'runs' (verified, diagnosed) or 'fix' (trained only)."""
        first = kind == "runs"
        return Job(
            case.name, seed, str(out / kind / f"{case.name}-s{seed}"), str(data_dir),
            fix=fix or [], verify=first, diagnose=first and bool(diagnose),
        )  # fmt: skip

    start = time.perf_counter()
    jobs = [make(case, seed, "runs") for case in to_run for seed in args.seeds]
    runs = {(r["case"], r["seed"]): r for r in run_all(jobs, args.workers, "train")}
    jobs, fixes = fix_jobs([c for c in cases if c.expected], runs, fix_seeds, make)
    fixes |= {(r["case"], r["seed"]): r for r in run_all(jobs, args.workers, "fix")}
    seconds = time.perf_counter() - start
    result = tally(cases, runs, fixes, args.seeds, fix_seeds)
    result |= {"seconds": round(seconds, 1), "seeds": args.seeds}
    result |= {"runs": list(runs.values()), "fixes": list(fixes.values())}
    result["first_findings"] = first_findings(result)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    print_tables(result, diagnose is not None)
    print(f"\n{len(runs)} runs and {len(jobs)} fixes in {seconds:.0f} s; {out / 'results.json'}\n")
    if diagnose is None:
        return
    for line in result["first_findings"]:
        print(f"{line['case']} s{line['seed']}: {line['verdict']}, first {line['first']}")
    text = markdown(result, args, seconds)
    text = text.replace("bench/doctor_cases.py", "bench/doctor_holdout.py")
    print("\n" + text.replace("## Doctor: faulty", "## Doctor, held out: faulty", 1))
    print_misses(result)


if __name__ == "__main__":
    main()
