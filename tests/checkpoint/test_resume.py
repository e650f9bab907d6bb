"""Exact resume, in-process: a run stopped at step k and resumed equals one never stopped.

A crash is simulated by raising from the training step (what is on disk is what a SIGKILL
would leave, since every file is complete once written); tests/checkpoint/test_kill.py does
the same with real signals to subprocesses.
"""

from __future__ import annotations

import pytest

from hone.cli import main
from hone.config import to_toml
from hone.engine import Trainer
from hone.engine.cv import cross_validate
from hone.engine.step import Stepper
from hone.errors import ConfigError
from tests.checkpoint.helpers import (
    LINREG,
    MLP,
    Crash,
    checkpoint_steps,
    config,
    crash_at_step,
    events,
    gpt,
    same_weights,
    train_steps,
    weights,
)


def run(run_dir, overrides, crash: int | None = None, resume=False, data=None):
    cfg = config(*overrides)
    if crash is None:
        return Trainer(config=cfg, run_dir=run_dir, resume=resume, data=data).fit()
    with crash_at_step(crash), pytest.raises(Crash):
        Trainer(config=cfg, run_dir=run_dir, resume=resume, data=data).fit()
    return None


def check_resume_is_exact(tmp_path, overrides, crashes, steps) -> None:
    """Crash at each step of `crashes` in turn, resuming after each; compare with a run
    never stopped: weights bit for bit, every logged event (timing aside), and the steps."""
    run(tmp_path / "ref", overrides)
    run(tmp_path / "run", overrides, crash=crashes[0])
    for crash in crashes[1:]:
        run(tmp_path / "run", overrides, crash=crash, resume=True)
    summary = run(tmp_path / "run", overrides, resume=True)
    assert summary["steps"] == steps
    assert same_weights(weights(tmp_path / "ref"), weights(tmp_path / "run"))
    for split in ("train", "val", "test"):
        assert events(tmp_path / "ref", split) == events(tmp_path / "run", split), split
    assert train_steps(tmp_path / "run") == sorted(set(train_steps(tmp_path / "run")))


# Every optimizer and every schedule, each with a different twist, at a few steps apiece.
CASES = {
    "sgd-nesterov-step": [
        *LINREG,
        "optim.name=sgd",
        "optim.lr=0.05",
        "optim.momentum=0.9",
        "optim.nesterov=true",
        "schedule.name=step",
        "schedule.step_size=7",
        "schedule.gamma=0.5",
    ],
    "gd-exponential": [*LINREG, "optim.name=gd", "optim.lr=0.1", "schedule.name=exponential"],
    "adam-inverse-time-accum": [
        *MLP,
        "optim.name=adam",
        "schedule.name=inverse_time",
        "schedule.warmup_steps=4",
        "train.grad_accum=2",
    ],
    "adamw-cosine-clip-log4": [
        *MLP,
        "optim.name=adamw",
        "optim.weight_decay=0.1",
        "schedule.name=cosine",
        "schedule.warmup_steps=3",
        "train.clip_norm=0.5",
        "log.every=4",  # the loss window straddles checkpoints
    ],
    "adagrad-linear-l1": [
        *MLP,
        "optim.name=adagrad",
        "optim.lr=0.05",
        "schedule.name=linear",
        "reg.l1=0.0001",
    ],
    "rmsprop-wsd-l2": [
        *MLP,
        "optim.name=rmsprop",
        "optim.momentum=0.5",
        "schedule.name=wsd",
        "reg.l2=0.001",
    ],
    "lbfgs": [*LINREG, "optim.name=lbfgs", "optim.lr=1", "optim.max_iter=5"],
    "newton": [*LINREG, "optim.name=newton", "optim.lr=1", "optim.damping=0.1"],
    "muon-cosine": [*MLP, "optim.name=muon", "schedule.name=cosine", "log.every=3"],
}


@pytest.mark.parametrize("name", list(CASES))
def test_resume_is_exact(tmp_path, name: str) -> None:
    overrides = [*CASES[name], "train.max_steps=24", "train.checkpoint_every=5"]
    check_resume_is_exact(tmp_path, overrides, crashes=[7, 18], steps=24)


def test_gpt_resume_is_exact(tmp_path) -> None:
    overrides = [
        *gpt(tmp_path),
        "optim.name=muon",
        "schedule.name=cosine",
        "schedule.warmup_steps=2",
        "train.grad_accum=2",
        "train.max_steps=16",
        "train.checkpoint_every=3",
        "log.every=2",
    ]
    check_resume_is_exact(tmp_path, overrides, crashes=[4, 11], steps=16)


def test_early_stopping_resumes_exactly(tmp_path) -> None:
    # A large lr makes the validation loss bounce, so patience 2 stops the run early.
    overrides = [
        *MLP,
        "optim.name=sgd",
        "optim.lr=2.0",
        "train.eval_every=2",
        "train.patience=2",
        "train.max_steps=200",
        "train.checkpoint_every=3",
    ]
    run(tmp_path / "probe", overrides)
    stopped = train_steps(tmp_path / "probe")[-1]
    assert stopped < 200, "the configuration must stop early for this test to mean anything"
    check_resume_is_exact(tmp_path, overrides, crashes=[stopped - 3, stopped - 1], steps=stopped)


def test_kfold_resumes_at_the_fold_it_was_in(tmp_path) -> None:
    overrides = [*MLP, "train.max_steps=12", "train.checkpoint_every=4", "train.eval_every=4"]
    cfg = config(*overrides)
    reference = cross_validate(cfg, tmp_path / "ref", 2)
    # fold 0 finishes, fold 1 crashes at step 6
    calls = {"n": 0}
    original = Stepper.step

    def train_step(self, batches):
        calls["n"] += 1
        if calls["n"] == 12 + 7:
            raise Crash
        return original(self, batches)

    Stepper.step = train_step
    try:
        with pytest.raises(Crash):
            cross_validate(cfg, tmp_path / "run", 2)
    finally:
        Stepper.step = original
    assert (tmp_path / "run/fold-0/summary.json").is_file()
    assert checkpoint_steps(tmp_path / "run/fold-1") == [4]
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        cross_validate(cfg, tmp_path / "run", 2)
    result = cross_validate(cfg, tmp_path / "run", 2, resume=True)
    assert result["best_val_loss"] == reference["best_val_loss"]
    for fold in (0, 1):
        ref, got = tmp_path / f"ref/fold-{fold}", tmp_path / f"run/fold-{fold}"
        assert same_weights(weights(ref), weights(got))
        assert events(ref, "train") == events(got, "train")


def test_resume_extends_a_finished_run(tmp_path) -> None:
    overrides = [*LINREG, "optim.name=sgd", "train.checkpoint_every=0"]
    run(tmp_path / "ref", [*overrides, "train.max_steps=30"])
    run(tmp_path / "run", [*overrides, "train.max_steps=20"])
    assert checkpoint_steps(tmp_path / "run") == [20]  # checkpoint_every=0: only at the end
    run(tmp_path / "run", [*overrides, "train.max_steps=30"], resume=True)
    assert same_weights(weights(tmp_path / "ref"), weights(tmp_path / "run"))
    assert train_steps(tmp_path / "run") == list(range(1, 31))
    assert len(events(tmp_path / "run", "test")) == 1  # the first ending's test was cut back


def test_changing_a_decaying_schedule_length_is_refused(tmp_path) -> None:
    """Refused when the checkpoint loads, and then the run is as it was: its config (whose
    bounds the next resume reads), its metrics, its later checkpoints."""
    overrides = [*LINREG, "optim.name=sgd", "schedule.name=cosine", "train.checkpoint_every=5"]
    run(tmp_path / "run", [*overrides, "train.max_steps=10"])
    files = {
        name: (tmp_path / "run" / name).read_bytes() for name in ("config.toml", "metrics.jsonl")
    }
    steps = checkpoint_steps(tmp_path / "run")
    assert steps[-1] == 10 and len(steps) > 1
    older = tmp_path / "run" / "checkpoints" / f"step-{steps[0]:07d}"
    with pytest.raises(ConfigError, match="planned for 10 steps"):
        run(tmp_path / "run", [*overrides, "train.max_steps=20"], resume=older)
    for name, before in files.items():
        assert (tmp_path / "run" / name).read_bytes() == before, name
    assert checkpoint_steps(tmp_path / "run") == steps
    assert main(["train", "--resume", str(tmp_path / "run"), "--log.progress=off"]) == 0


def test_fresh_run_in_a_directory_with_checkpoints_is_refused(tmp_path) -> None:
    overrides = [*LINREG, "train.max_steps=5"]
    run(tmp_path / "run", overrides)
    with pytest.raises(ConfigError, match="--resume"):
        run(tmp_path / "run", overrides)
    run(tmp_path / "other", overrides, resume="auto")  # auto starts a run that has none
    assert checkpoint_steps(tmp_path / "other") == [5]


def test_cli_resume_rules(tmp_path, capsys) -> None:
    overrides = [*LINREG, "optim.name=sgd", "train.max_steps=6", "train.checkpoint_every=3"]
    config_file = tmp_path / "run.toml"
    config_file.write_text(to_toml(config(*overrides)))
    assert main(["train", str(config_file), "--run-dir", str(tmp_path / "run")]) == 0
    assert main(["train", "--resume", "auto"]) == 2
    assert "--resume auto needs --run-dir" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "run"), "--optim.lr=0.5"]) == 2
    assert "optim.lr must stay" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "run"), "--run-dir", str(tmp_path)]) == 2
    assert "continues" in capsys.readouterr().err
    # a bound may change: the run goes on to step 9 in the same directory
    assert main(["train", "--resume", str(tmp_path / "run"), "--train.max_steps=9"]) == 0
    assert train_steps(tmp_path / "run") == list(range(1, 10))
    # --resume auto with the same config continues too; with another lr it is refused
    assert main(["train", str(config_file), "--run-dir", str(tmp_path / "run"), "--resume", "auto",
                 "--train.max_steps=12"]) == 0  # fmt: skip
    assert checkpoint_steps(tmp_path / "run")[-1] == 12
    assert main(["train", str(config_file), "--run-dir", str(tmp_path / "run"), "--resume", "auto",
                 "--optim.lr=0.5"]) == 2  # fmt: skip
