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
    lr_at=None,
    val_metrics=None,
    summary=None,
):
    """A run directory with the files `hone train` writes, its numbers set by the test:
    `losses(step)` the per-step training loss, `val(step)` the validation loss, `row(step,
    type)` and `record(step)` the statistics of a layer and of the step, `lr_at(step)` the
    lr the schedule gave (default optim.lr), `val_metrics(step)` a validation event's
    metrics (default accuracy 0.9), `summary` more of summary.json."""
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
    lr_at = lr_at or (lambda s: base["optim"]["lr"])
    val_metrics = val_metrics or (lambda s: {"accuracy": 0.9})
    per_step = [losses(s) for s in range(1, steps + 1)]
    events = []
    for s in range(10, steps + 1, 10):
        events.append(
            {"step": s, "split": "train", "loss": sum(per_step[s - 10 : s]) / 10, "lr": lr_at(s)}
        )
        if s % 40 == 0:
            events.append({"step": s, "split": "val", "loss": val(s), **val_metrics(s)})
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
                "lr": lr_at(s),
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
    (path / "summary.json").write_text(
        json.dumps({"steps": steps, "stop_reason": "max_steps", **(summary or {})})
    )
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


def _rings(s: int) -> float:
    """Coming down, and 80% higher every other 40 steps: the loss overshoots and rings."""
    return (2.3 * math.exp(-s / 60) + 0.3) * (1.8 if (s // 40) % 2 else 1.0)


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
    "oscillation": dict(losses=_rings, val=_rings, record=lambda s: {"grad_cosine": -0.8}),
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


def test_gradients_that_bounce_while_the_loss_comes_down_are_only_a_warning(tmp_path) -> None:
    # Full-batch descent near the stable edge bounces across the valley (cosine -0.8) while
    # its loss falls smoothly: the curve, not the gradients alone, makes an error.
    report = diagnose(write_run(tmp_path / "run", record=lambda s: {"grad_cosine": -0.8}))
    assert report["healthy"], report["findings"]
    assert [(f["id"], f["severity"]) for f in report["findings"]] == [("oscillation", "warning")]


def test_overfitting_is_judged_against_the_validation_loss_at_its_best(tmp_path) -> None:
    # Issue 29's first textbook case: the validation loss falls fast (steps of 0.4 between
    # evaluations), bottoms out at 0.33, climbs to 0.5 and stays, jittering by 0.003, while
    # the training loss goes to ~0. The steep descent before the best is not the noise that
    # a rise must clear; the jitter after it is.
    rng = random.Random(2)
    report = diagnose(
        write_run(
            tmp_path / "run",
            losses=lambda s: 2.3 * math.exp(-s / 8) + 1e-5,
            val=lambda s: 0.33 + 2.0 * math.exp(-s / 12) + min(s, 120) / 700 + 0.003 * rng.random(),
        )
    )
    first = report["findings"][0]
    assert (first["id"], first["severity"]) == ("overfitting", "error"), report["findings"]
    assert first["evidence"]["best_step"] <= 80 and first["evidence"]["val_loss_end"] > 0.45
    assert "--optim.weight_decay=0.1" in first["fix"] and "--model.dropout=0.2" in first["fix"]


def test_a_validation_loss_that_only_jitters_near_its_best_is_not_overfitting(tmp_path) -> None:
    rng = random.Random(3)
    report = diagnose(
        write_run(
            tmp_path / "run",
            losses=lambda s: 2.3 * math.exp(-s / 8) + 1e-5,
            val=lambda s: 0.33 + 2.0 * math.exp(-s / 12) + 0.02 * rng.random(),
        )
    )
    assert "overfitting" not in [f["id"] for f in report["findings"]], report["findings"]


def test_an_lr_decayed_early_is_a_plateau_whose_fix_is_the_schedule(tmp_path) -> None:
    # Issue 29's second textbook case: lr / 1000 every 15 steps; the loss freezes at 0.7,
    # far under a uniform guess's 2.3, where the old rule looked for plateaus.
    config = {"schedule": {"name": "step", "step_size": 15, "gamma": 0.001}}
    report = diagnose(
        write_run(
            tmp_path / "run",
            config=config,
            losses=lambda s: 2.3 * math.exp(-min(s, 15) / 8) + 0.55,
            val=lambda s: 0.703,
            lr_at=lambda s: 0.003 * 0.001 ** ((s - 1) // 15),
        )
    )
    first = report["findings"][0]
    assert (first["id"], first["severity"]) == ("plateau", "error"), report["findings"]
    assert first["evidence"]["lr_small_from_step"] <= 25
    # One cut to a tenth of the peak, half way through the 400 steps.
    assert first["fix"] == ["--schedule.step_size=200", "--schedule.gamma=0.1"]
    assert "lr_too_low" not in [f["id"] for f in report["findings"]]


def test_schedule_fixes_keep_the_lr_up_for_most_of_the_run(tmp_path) -> None:
    def fix(name: str, **schedule) -> list[str]:
        report = diagnose(
            write_run(
                tmp_path / name,
                config={"schedule": {"name": name, **schedule}},
                losses=lambda s: 2.3 * math.exp(-min(s, 15) / 8) + 0.55,
                val=lambda s: 0.703,
                lr_at=lambda s: 0.003 * 0.8**s,
            )
        )
        return report["findings"][0]["fix"]

    assert fix("exponential", gamma=0.8) == ["--schedule.gamma=0.9943"]  # 0.1 ** (1/400)
    assert fix("inverse_time", decay=5.0) == ["--schedule.decay=0.022"]  # lr/10 at step 400
    assert fix("step", step_size=10, gamma=0.5) == [  # 3 halvings leave 12.5% at the end
        "--schedule.step_size=100",
        "--schedule.gamma=0.5",
    ]
    assert fix("cosine", decay_steps=10) == ["--schedule.decay_steps=0"]  # over the whole run


def test_lr_too_low_reads_the_lr_the_run_had_not_the_configured_one(tmp_path) -> None:
    # optim.lr is 0.003, but a warm-up far longer than the run kept the logged lr at 3e-5:
    # the evidence is the logged lr, the fix still scales optim.lr.
    mechanism = MECHANISMS["lr_too_low"]
    report = diagnose(
        write_run(
            tmp_path / "run",
            config={"schedule": {"name": "constant", "warmup_steps": 40_000}},
            lr_at=lambda s: 3e-5,
            **mechanism,
        )
    )
    first = report["findings"][0]
    assert first["id"] == "lr_too_low" and first["evidence"]["lr"] == 3e-5, report["findings"]
    assert "3e-05" in first["why"] and first["fix"] == ["--optim.lr=0.03"]


def test_input_scale_on_regression_by_sgd_also_raises_the_tiny_lr(tmp_path) -> None:
    raw = {"normalize": "none", "std_max": 1000.0, "std_median": 1.0, "abs_max": 3600.0}
    sgd = diagnose(
        write_run(
            tmp_path / "sgd",
            config={"data": {"normalize": "none"}, "optim": {"name": "sgd", "lr": 1e-7}},
            run={"input_scale": raw},
        )
    )["findings"][0]
    assert sgd["id"] == "input_scale"
    # std 1000: the curvature falls 10^6-fold once standardized; 1e-7 * 10^6 = 0.1
    assert sgd["fix"] == ["--data.normalize=standard", "--optim.lr=0.1"]
    adam = diagnose(
        write_run(
            tmp_path / "adam", config={"data": {"normalize": "none"}}, run={"input_scale": raw}
        )
    )["findings"][0]
    assert adam["fix"] == ["--data.normalize=standard"]  # Adam scales its steps per weight


def test_the_task_metric_is_the_summarys_and_a_users_direction_is_its_own(tmp_path) -> None:
    # A user's metric logged before the task's in every validation event: doctor reads the
    # task metric named in summary.json, and a user's metric direction from the summary.
    mechanism = MECHANISMS["overfitting"]
    run = write_run(
        tmp_path / "run",
        val_metrics=lambda s: {"error_rate": 0.05 + s / 4000, "accuracy": 0.95 - s / 4000},
        summary={"metric": "accuracy", "metric_directions": {"error_rate": "min"}},
        **mechanism,
    )
    from hone.doctor.evidence import read

    evidence = read(run)
    assert (evidence.metric, evidence.metric_direction) == ("accuracy", "max")
    assert evidence.val[-1][2] == pytest.approx(0.85)
    first = diagnose(run)["findings"][0]
    assert first["evidence"]["val_accuracy_end"] < first["evidence"]["val_accuracy_at_best"]
    (run / "summary.json").write_text(
        json.dumps(
            {"steps": 400, "metric": "error_rate", "metric_directions": {"error_rate": "min"}}
        )
    )
    assert (read(run).metric, read(run).metric_direction) == ("error_rate", "min")


def test_list_findings_names_every_id_with_its_definition(hone_cli) -> None:
    from hone.doctor import DEFINITIONS, IDS

    listed = hone_cli("doctor", "--list-findings", "--json")
    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    assert [f["id"] for f in document["findings"]] == list(IDS)
    assert all(f["definition"] == DEFINITIONS[f["id"]] for f in document["findings"])
    assert list(document["severities"]) == ["error", "warning", "info"]
    none = hone_cli("doctor")
    assert none.returncode == 2 and "--list-findings" in none.stderr
