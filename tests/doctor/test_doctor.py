"""`hone doctor`: each rule fires on its mechanism and stays quiet on healthy noise; the
command reads real runs."""

from __future__ import annotations

import json
import math
import random

import pytest

from hone.doctor import diagnose

LAYERS = ("Linear", "ReLU", "Linear", "ReLU", "Linear")


def write_run(
    path,
    config: dict[str, dict] | None = None,
    losses=None,
    val=None,
    row=None,
    record=None,
    run=None,
    faults=(),
    steps: int = 400,
    every: int = 25,
):
    """A run directory with the files `hone train` writes, its numbers set by the test:
    `losses(step)` the per-step training loss, `val(step)` the validation loss, `row(step,
    type)` and `record(step)` the statistics of a layer and of the step."""
    rng = random.Random(0)
    losses = losses or (lambda s: 2.3 * math.exp(-s / 80) + 0.1 + 0.05 * rng.random())
    val = val or (lambda s: 2.3 * math.exp(-s / 80) + 0.15)
    base = {
        "model": {"name": "mlp", "activation": "relu", "init": "default"},
        "optim": {"name": "adamw", "lr": 0.003},
        "data": {"normalize": "standard"},
        "train": {"max_steps": steps},
    }
    for section, values in (config or {}).items():
        base.setdefault(section, {}).update(values)
    path.mkdir(parents=True)
    toml = "".join(
        f"[{section}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
        for section, values in base.items()
    )
    (path / "config.toml").write_text(toml)
    lr = base["optim"]["lr"]
    per_step = [losses(s) for s in range(1, steps + 1)]
    events = []
    for s in range(10, steps + 1, 10):
        events.append(
            {"step": s, "split": "train", "loss": sum(per_step[s - 10 : s]) / 10, "lr": lr}
        )
        if s % 40 == 0:
            events.append({"step": s, "split": "val", "loss": val(s), "accuracy": 0.9})
    events += list(faults)
    (path / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    stats = [
        {
            "step": 0,
            "kind": "run",
            "task": "classification",
            "initial_loss": per_step[0],
            "uniform_loss": math.log(10),
            "input_scale": {
                "normalize": base["data"]["normalize"],
                "std_max": 1.0,
                "std_median": 0.9,
                "abs_max": 3.0,
            },  # fmt: skip
            **(run or {}),
        }
    ]
    previous = 0
    for s in [1, *range(every, steps + 1, every)]:
        rows = []
        for i, kind in enumerate(LAYERS):
            values = (
                {"grad_norm": 0.5, "weight_norm": 5.0, "update_ratio": 2e-3}
                if kind == "Linear"
                else {"dead_fraction": 0.05, "act_mean": 0.3, "act_std": 0.4}
            )
            rows.append({"name": str(i), "type": kind, **values, **(row(s, kind) if row else {})})
        grads = [r["grad_norm"] for r in rows if "grad_norm" in r]
        stats.append(
            {
                "step": s,
                "kind": "layers",
                "loss": per_step[s - 1],
                "lr": lr,
                "losses": per_step[previous:s],
                "grad_norm": 1.0,
                "weight_norm": 9.0,
                "update_ratio": rows[0].get("update_ratio", 2e-3),
                "first_last_grad_ratio": grads[0] / grads[-1],
                "grad_cosine": 0.1,
                "layers": rows,
                **(record(s) if record else {}),
            }
        )
        previous = s
    (path / "stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stats))
    (path / "summary.json").write_text(json.dumps({"steps": steps, "stop_reason": "max_steps"}))
    return path


def ids(report: dict) -> list[str]:
    return [f["id"] for f in report["findings"] if f["severity"] == "error"]


def test_a_healthy_noisy_run_has_no_finding(tmp_path) -> None:
    rng = random.Random(1)
    # Minibatch noise of +-40% on every step, validation jitter of +-5%: healthy.
    report = diagnose(
        write_run(
            tmp_path / "run",
            losses=lambda s: (2.3 * math.exp(-s / 60) + 0.2) * (0.6 + 0.8 * rng.random()),
            val=lambda s: (2.3 * math.exp(-s / 60) + 0.25) * (0.95 + 0.1 * rng.random()),
            record=lambda s: {"grad_cosine": rng.uniform(-0.25, 0.3)},
        )
    )
    assert report["healthy"] and not ids(report), report["findings"]


def _rises(s: int) -> float:
    return 2.3 * math.exp(-s / 30) + 0.3 if s < 100 else 0.3 + (s - 100) / 50


MECHANISMS = {
    "dead_units": dict(
        row=lambda s, kind: {"dead_fraction": 0.8} if kind == "ReLU" and s > 100 else {},
    ),
    "saturated_units": dict(
        config={"model": {"activation": "tanh"}},
        row=lambda s, kind: {"type": "Tanh", "saturated_fraction": 0.9} if kind != "Linear" else {},
    ),
    "vanishing_gradients": dict(
        losses=lambda s: 2.3 - s * 1e-4,
        record=lambda s: {"first_last_grad_ratio": 1e-6},
    ),
    "exploding_gradients": dict(record=lambda s: {"first_last_grad_ratio": 1e5}),
    "bad_initialization": dict(run={"initial_loss": 40.0}),
    "lr_too_high": dict(losses=_rises, record=lambda s: {"update_ratio": 0.2}),
    "lr_too_low": dict(
        losses=lambda s: 2.3 - s * 1e-5,
        val=lambda s: 2.31 - s * 1e-5,
        record=lambda s: {"update_ratio": 1e-6},
        row=lambda s, kind: {"update_ratio": 1e-6} if kind == "Linear" else {},
    ),
    "oscillation": dict(record=lambda s: {"grad_cosine": -0.8}),
    "plateau": dict(losses=lambda s: 2.29 + 0.01 * math.sin(s)),
    "overfitting": dict(val=lambda s: 1.0 if s < 120 else 1.0 + (s - 120) / 200),
    "input_scale": dict(
        config={"data": {"normalize": "none"}},
        run={
            "input_scale": {
                "normalize": "none",
                "std_max": 800.0,
                "std_median": 2.0,
                "abs_max": 4000.0,
            }
        },  # fmt: skip
    ),
    "non_finite": dict(
        faults=[{"step": 301, "split": "fault", "event": "skipped_step", "consecutive": 1}]
    ),
}


@pytest.mark.parametrize("finding", sorted(MECHANISMS))
def test_each_mechanism_is_named_first_with_a_fix(tmp_path, finding) -> None:
    report = diagnose(write_run(tmp_path / "run", **MECHANISMS[finding]))
    assert not report["healthy"]
    first = report["findings"][0]
    assert first["id"] == finding and first["severity"] == "error", report["findings"]
    assert first["fix"] and all(f.startswith("--") and "=" in f for f in first["fix"])
    assert first["why"] and first["evidence"]


def test_fixes_move_the_learning_rate_the_right_way(tmp_path) -> None:
    high = diagnose(write_run(tmp_path / "high", **MECHANISMS["lr_too_high"]))["findings"][0]
    low = diagnose(write_run(tmp_path / "low", **MECHANISMS["lr_too_low"]))["findings"][0]
    lr_of = lambda f: float(next(x for x in f["fix"] if x.startswith("--optim.lr="))[11:])  # noqa: E731
    assert lr_of(high) <= 0.003 / 10 and lr_of(low) >= 0.003 * 10


def test_early_stopping_that_caught_overfitting_is_not_an_error(tmp_path) -> None:
    run = write_run(tmp_path / "run", **MECHANISMS["overfitting"])
    (run / "summary.json").write_text(json.dumps({"steps": 400, "stop_reason": "early_stopping"}))
    report = diagnose(run)
    assert report["healthy"]
    assert [f["severity"] for f in report["findings"] if f["id"] == "overfitting"] == ["info"]


def test_doctor_reads_a_real_diverged_run_and_train_hints_at_it(tmp_path, hone_cli) -> None:
    run = tmp_path / "run"
    train = hone_cli(
        "train", "linreg", "--optim.lr=10", "--train.max_steps=60", "--run-dir", str(run),
        "--log.progress=off", "--log.tensorboard=false",
    )  # fmt: skip
    assert train.returncode == 3, train.stderr
    assert f"hone doctor {run}" in train.stderr.splitlines()[-1]
    doctor = hone_cli("doctor", str(run), "--json")
    assert doctor.returncode == 1, doctor.stderr
    report = json.loads(doctor.stdout)
    assert report["findings"][0]["id"] == "non_finite"
    first = report["findings"][0]["evidence"]
    assert first["origin"] in ("loss", "module", "gradient")
    assert first["trend"] == "grew"  # lr 10: the loss and weights grow for steps before NaN
    text = hone_cli("doctor", str(run))
    assert "diagnosis: non_finite" in text.stdout and "--optim.lr=" in text.stdout
    missing = hone_cli("doctor", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "Traceback" not in missing.stderr


def test_doctor_finds_nothing_in_a_real_healthy_run(tmp_path, hone_cli) -> None:
    from hone.config import load_config
    from hone.engine import Trainer

    overrides = ["train.max_epochs=0", "train.max_steps=200", "train.eval_every=20",
                 "log.tensorboard=false", "log.progress=off"]  # fmt: skip
    Trainer(config=load_config("mlp-digits", overrides), run_dir=tmp_path / "run").fit()
    doctor = hone_cli("doctor", str(tmp_path / "run"), "--json")
    assert doctor.returncode == 0, doctor.stdout
    report = json.loads(doctor.stdout)
    assert report["healthy"] and report["statistics"] and report["steps"] == 200
