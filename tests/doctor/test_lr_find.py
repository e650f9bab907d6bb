"""The lr range test: its curve rules on made-up losses, the suggestion against the closed-form
stability limit of gradient descent on linear regression, NaN at high lr, and the CLI."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from hone.config import load_config
from hone.doctor.lr_find import SweepCurve, lr_find, suggest, sweep_lrs
from hone.engine import Trainer
from hone.errors import ConfigError
from tests.conftest import run_hone

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _feed(curve: SweepCurve, lrs: list[float], losses: list[float]) -> str:
    for lr, loss in zip(lrs, losses, strict=True):
        if reason := curve.add(lr, loss):
            return reason
    return ""


def _valley(num_steps: int) -> tuple[list[float], list[float]]:
    """A made-up sweep: flat at 2, down to 0.1 around lr 1e-2, then up sharply past 1e-1."""
    lrs = sweep_lrs(1e-6, 10.0, num_steps)
    losses = [0.1 + 1.9 / (1 + (lr / 1e-3) ** 2) + 1e4 * max(0.0, lr - 0.1) ** 2 for lr in lrs]
    return lrs, losses


def test_an_early_spike_and_a_lone_nan_neither_stop_the_sweep_nor_move_the_suggestion() -> None:
    lrs, losses = _valley(100)
    clean = SweepCurve(skip_start=5)
    clean_reason = _feed(clean, lrs, losses)
    noisy_losses = list(losses)
    noisy_losses[2] = 50.0  # an early spike, 25x the loss around it
    noisy_losses[40] = math.nan  # one bad batch: the NaN guard skips it
    noisy = SweepCurve(skip_start=5)
    noisy_reason = _feed(noisy, lrs, noisy_losses)
    assert "rose above 4x" in clean_reason and "rose above 4x" in noisy_reason
    assert len(noisy.lrs) == len(clean.lrs)  # stopped at the same step
    assert suggest(noisy, diverged=True)[0] == pytest.approx(suggest(clean, diverged=True)[0])
    lr, reason = suggest(clean, diverged=True)
    assert 1e-3 < lr < 1e-1 / 2, reason  # a tenth of the valley's lowest smoothed point
    assert "lowest" in reason


def test_two_nonfinite_steps_in_a_row_stop_and_the_suggestion_lies_below_them() -> None:
    lrs = sweep_lrs(1e-5, 1.0, 50)
    losses = [1.0 / (1 + lr * 100) for lr in lrs[:30]] + [math.inf, math.nan]
    curve = SweepCurve(skip_start=3)
    reason = _feed(curve, lrs[:32], losses)
    assert "not finite for 2 steps" in reason
    lr, _ = suggest(curve, diverged=True)
    assert math.isfinite(lr) and lr < lrs[30]


def test_a_loss_still_falling_at_the_end_asks_for_a_higher_end_lr() -> None:
    lrs = sweep_lrs(1e-5, 1e-2, 50)
    curve = SweepCurve(skip_start=3)
    assert _feed(curve, lrs, [1.0 / (1 + lr * 1000) for lr in lrs]) == ""
    lr, reason = suggest(curve, diverged=False)
    assert lr == pytest.approx(1e-3) and "--end-lr" in reason


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"start_lr": 1.0, "end_lr": 0.1}, "--start-lr"),
        ({"num_steps": 5}, "--num-steps"),
        ({"smoothing": 1.0}, "--smoothing"),
        ({"stop_factor": 1.0}, "--stop-factor"),
    ],
)
def test_bad_arguments_name_the_flag(tmp_path: Path, kwargs: dict, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        lr_find(load_config("linreg"), tmp_path, **kwargs)


def _linreg_gd(*overrides: str) -> list[str]:
    return ["optim.name=gd", "log.progress=off", "log.tensorboard=false", *overrides]


def _final_train_loss(lr: float, num_steps: int, run_dir: Path) -> tuple[float, Trainer]:
    """Full-batch GD at a fixed lr for num_steps; the final loss over the training split."""
    cfg = load_config(
        "linreg",
        _linreg_gd(f"optim.lr={lr}", f"train.max_steps={num_steps}", "train.max_epochs=0",
                   "train.nan_guard=false"),
    )  # fmt: skip
    trainer = Trainer(config=cfg, run_dir=run_dir)
    trainer.run()
    trainer.close()
    x, y = trainer.data.train
    with torch.no_grad():
        loss = trainer.loss_fn(trainer.model(x), y).item()
    return (loss if math.isfinite(loss) else math.inf), trainer


def test_linreg_gd_suggestion_is_stable_in_closed_form_and_near_the_best_fixed_lr(
    tmp_path: Path,
) -> None:
    # The best fixed lr: the lowest training loss after 10 full-batch steps, on a log grid.
    grid = [10 ** (k / 4) for k in range(-12, 3)]  # 1e-3 .. 3.16
    finals = {lr: _final_train_loss(lr, 10, tmp_path / f"fixed-{i}") for i, lr in enumerate(grid)}
    best_lr = min(grid, key=lambda lr: finals[lr][0])

    # GD on the MSE (mean over samples and the one output) of a linear model, with the bias as
    # a column of ones: Hessian H = 2/n [X 1]^T [X 1]; GD is stable iff lr < 2 / lambda_max(H).
    x, _ = finals[best_lr][1].data.train  # the features exactly as the trainer saw them
    x1 = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    hessian = 2.0 / len(x) * x1.T @ x1
    limit = 2.0 / torch.linalg.eigvalsh(hessian).max().item()
    assert finals[best_lr][0] < 0.02  # converged to the noise floor (noise std 0.1)
    assert best_lr < limit  # the grid's best is stable, as it must be

    result = lr_find(load_config("linreg", _linreg_gd()), tmp_path / "sweep")
    print(f"2/lambda_max {limit:.4g}, suggestion {result.suggestion:.4g}, best fixed {best_lr:.4g}")
    assert result.diverged, result.stop_reason
    assert result.suggestion < limit, (result.suggestion, limit, result.reason)
    assert best_lr / 10 <= result.suggestion <= best_lr * 10, (result.suggestion, best_lr)
    assert result.overrides == {"optim.lr": float(f"{result.suggestion:.3g}")}


@pytest.mark.parametrize("nan_guard", ["true", "false"])
def test_a_sweep_into_nan_still_suggests_a_finite_lr_below_it(
    tmp_path: Path, nan_guard: str
) -> None:
    # Stopping on a rise is all but off: only non-finite losses (overflow at lr >> 2/lambda)
    # end this sweep, with the NaN guard skipping them or (off) the weights becoming NaN.
    cfg = load_config("linreg", _linreg_gd(f"train.nan_guard={nan_guard}"))
    result = lr_find(cfg, tmp_path, 1e-4, 1e4, num_steps=100, stop_factor=1e300)
    assert "not finite" in result.stop_reason
    first_bad = next(i for i, loss in enumerate(result.losses) if loss is None)
    assert math.isfinite(result.suggestion) and result.suggestion < result.lrs[first_bad]

    saved = json.loads(result.json_path.read_text())  # strict JSON: no NaN or Infinity
    assert saved["suggestion"] == result.suggestion and saved["rule"] == "min/10"
    assert len(saved["lrs"]) == len(saved["losses"]) == len(saved["smoothed_losses"])
    assert None in saved["losses"]
    assert result.plot_path.read_bytes().startswith(PNG_MAGIC)


def test_cli_prints_the_suggestion_and_the_train_line(tmp_path: Path) -> None:
    out = tmp_path / "lr"
    result = run_hone(
        "lr-find", "mlp-digits", "--train.batch_size=32", "--num-steps", "60",
        "--output", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    saved = json.loads((out / "lr_find.json").read_text())
    assert saved["recipe"] == "mlp-digits" and len(saved["lrs"]) <= 60
    assert (out / "lr_find.png").read_bytes().startswith(PNG_MAGIC)
    lr = saved["overrides"]["optim.lr"]
    assert "suggested lr:" in result.stdout
    assert f"hone train mlp-digits --train.batch_size=32 --optim.lr={lr:g}" in result.stdout


@pytest.mark.parametrize(
    "args",
    [("--start-lr", "1", "--end-lr", "0.1"), ("--num-steps", "many"), ("--optim.lrr=1",)],
)
def test_cli_bad_flags_exit_2_with_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = run_hone("lr-find", "linreg", "--output", str(tmp_path / "lr"), *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "lr").exists()
