"""train.threads: the count a run trains with, and the tuner that fits it to the machine's load."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from hone.config import load_config
from hone.engine import Trainer
from hone.engine import threads as threads_module
from hone.engine.observers import Observer
from hone.engine.threads import (
    CHECK_SECONDS,
    LoadReading,
    ThreadTuner,
    candidates,
    idle_seconds,
    thread_setting,
)
from hone.errors import ConfigError


@pytest.fixture(autouse=True)
def _keep_threads():
    count = torch.get_num_threads()
    yield
    torch.set_num_threads(count)


def test_thread_setting_reads_auto_and_counts() -> None:
    assert thread_setting("auto") == 0
    assert thread_setting(3) == 3
    for bad in ("many", 0, -1, True):
        with pytest.raises(ConfigError, match="train.threads must be 'auto' or a positive"):
            load_config("mlp-digits", [f"train.threads={str(bad).lower()}"])


def test_candidates_run_from_all_cores_down_to_one() -> None:
    assert candidates(1) == [1]
    assert candidates(2) == [2, 1]
    assert candidates(8) == [8, 7, 4, 2, 1]


def test_idle_seconds_reads_idle_and_iowait_ticks(tmp_path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 700 30 0 0 0 0 0\ncpu0 50 0 25 350 15 0 0 0 0 0\n")
    import os

    assert idle_seconds(str(stat)) == pytest.approx(730 / os.sysconf("SC_CLK_TCK"))
    assert idle_seconds(str(tmp_path / "missing")) is None


class FakeMachine:
    """A clock and load readings for the tuner: a step takes `step_seconds[threads]`, and this
    process gets `share` of the CPU time its threads ask for."""

    def __init__(self, step_seconds: dict[int, float], share: float, idle_cores: float = 0.0):
        self.step_seconds, self.share, self.idle_cores = step_seconds, share, idle_cores
        self.time = self.cpu = self.idle = 0.0

    def now(self) -> float:
        return self.time

    def read_load(self) -> LoadReading:
        reading = LoadReading.__new__(LoadReading)
        reading.wall, reading.cpu, reading.idle = self.time, self.cpu, self.idle
        return reading

    def step(self) -> None:
        threads = torch.get_num_threads()
        seconds = self.step_seconds[threads]
        self.time += seconds
        self.cpu += seconds * threads * self.share
        self.idle += seconds * self.idle_cores


def _trainer() -> SimpleNamespace:
    events: list[dict] = []
    return SimpleNamespace(state=SimpleNamespace(step=0), emit=events.append, events=events)


def _train(tuner: ThreadTuner, machine: FakeMachine, trainer, steps: int) -> None:
    for _ in range(steps):
        machine.step()
        trainer.state.step += 1
        tuner.on_step_end(trainer, torch.zeros(()))


def _tuner(machine: FakeMachine, trainer) -> ThreadTuner:
    tuner = ThreadTuner(2)
    tuner.now, tuner.read_load = machine.now, machine.read_load
    tuner.__enter__()  # a round starts
    return tuner


def test_a_busy_machine_moves_the_run_to_the_faster_count() -> None:
    # Beside another process two threads wait on each other (the 4.4k vs 11.0k tok/s).
    machine = FakeMachine({2: 0.40, 1: 0.16}, share=0.6)
    trainer = _trainer()
    tuner = _tuner(machine, trainer)
    _train(tuner, machine, trainer, 40)
    assert tuner.current == 1 and torch.get_num_threads() == 1
    (probe,) = [e for e in trainer.events if e["split"] == "threads"][:1]
    assert probe["threads"] == 1 and probe["reason"] == "first probe"
    assert probe["step_seconds"] == {"2": 0.4, "1": 0.16}


def test_a_process_that_loses_its_cores_probes_again() -> None:
    machine = FakeMachine({2: 0.10, 1: 0.18}, share=1.0)
    trainer = _trainer()
    tuner = _tuner(machine, trainer)
    _train(tuner, machine, trainer, 40)
    assert tuner.current == 2
    # Another process arrives: this one gets 60% of its cores' time; its steps slow by 20%,
    # under the drift that would have told, but one thread is now faster.
    machine.step_seconds, machine.share = {2: 0.12, 1: 0.09}, 0.6
    _train(tuner, machine, trainer, 100)
    assert tuner.current == 1
    assert "got 60% of 2 cores" in trainer.events[1]["reason"]


def test_an_idle_machine_is_probed_once() -> None:
    machine = FakeMachine({2: 0.1, 1: 0.18}, share=0.98)
    trainer = _trainer()
    tuner = _tuner(machine, trainer)
    _train(tuner, machine, trainer, 500)  # 50 s
    assert tuner.current == 2 and not tuner.queue
    (probe,) = trainer.events
    assert probe["reason"] == "first probe" and probe["step_seconds"] == {"2": 0.1, "1": 0.18}


def test_steps_that_slow_down_are_probed_again() -> None:
    # A low-priority process: this one keeps most of its CPU time, yet its steps get slower.
    machine = FakeMachine({2: 0.1, 1: 0.18}, share=0.98)
    trainer = _trainer()
    tuner = _tuner(machine, trainer)
    _train(tuner, machine, trainer, 50)
    machine.step_seconds = {2: 0.35, 1: 0.2}
    _train(tuner, machine, trainer, 50)
    assert tuner.current == 1
    assert trainer.events[-1]["reason"] == "steps took 3.50x as long as at the last probe"


def test_cores_freed_again_bring_the_threads_back() -> None:
    machine = FakeMachine({2: 0.40, 1: 0.16}, share=0.6)
    trainer = _trainer()
    tuner = _tuner(machine, trainer)
    _train(tuner, machine, trainer, 40)
    assert tuner.current == 1
    # The other process ends: one core idles beside the single thread, two are faster again.
    machine.step_seconds, machine.share, machine.idle_cores = {2: 0.1, 1: 0.16}, 1.0, 1.0
    _train(tuner, machine, trainer, 40)
    assert tuner.current == 2 and torch.get_num_threads() == 2
    assert trainer.events[-1]["threads"] == 2


def test_idle_cores_beside_fewer_threads_ask_for_a_probe() -> None:
    tuner = ThreadTuner(4)
    tuner.current, tuner.probes, tuner.clock = 2, [{}], 100.0
    assert tuner.probe_reason(1.0, 1.5) == "1.5 cores idle beside 2 threads"
    assert tuner.probe_reason(1.0, 0.3) == ""
    assert tuner.probe_reason(0.5, 0.0) == "this process got 50% of 2 cores"
    tuner.current = 4  # every core in use already: idle ones are other processes' gaps
    assert tuner.probe_reason(1.0, 1.5) == ""


def test_a_count_must_win_clearly_to_replace_the_current_one() -> None:
    # 5% faster with one thread is within noise: the run keeps its two.
    machine = FakeMachine({2: 0.100, 1: 0.095}, share=0.5)
    trainer = _trainer()
    tuner = _tuner(machine, trainer)
    _train(tuner, machine, trainer, 40)
    assert tuner.current == 2
    assert trainer.events and all(e["threads"] == 2 for e in trainer.events)


def test_readings_are_taken_at_most_once_a_check_interval() -> None:
    machine = FakeMachine({2: 0.01, 1: 0.02}, share=1.0)
    trainer = _trainer()
    tuner = _tuner(machine, trainer)
    calls = []
    tuner.read_load = lambda: calls.append(1) or machine.read_load()
    _train(tuner, machine, trainer, 1000)  # 10 s of 10 ms steps
    assert len(calls) <= 10 / CHECK_SECONDS + 1


def _cfg(*overrides: str):
    return load_config(
        "mlp-digits",
        [
            "train.max_steps=30",
            "train.max_epochs=0",
            "log.progress=off",
            "log.tensorboard=false",
            "log.stats_every=0",
            *overrides,
        ],
    )


class CountsSeen(Observer):
    """torch's thread count at every step of a run."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def on_step_end(self, trainer, loss) -> None:
        self.counts.append(torch.get_num_threads())


def test_a_fixed_count_holds_while_the_run_trains_and_no_longer(tmp_path) -> None:
    torch.set_num_threads(2)
    seen = CountsSeen()
    cfg = _cfg("train.threads=1", "train.max_steps=20")
    trainer = Trainer(config=cfg, run_dir=tmp_path / "run", observers=[seen])
    assert torch.get_num_threads() == 2  # built, not training yet
    trainer.run(until=10)
    assert torch.get_num_threads() == 2  # between rounds: the caller's count (a notebook's)
    trainer.fit()
    assert torch.get_num_threads() == 2 and seen.counts == [1] * 20


def test_the_count_comes_back_when_a_round_fails(tmp_path) -> None:
    class Fails(Observer):
        def on_step_end(self, trainer, loss) -> None:
            raise RuntimeError("a user's observer fails")

    torch.set_num_threads(2)
    trainer = Trainer(config=_cfg("train.threads=1"), run_dir=tmp_path / "run", observers=[Fails()])
    with pytest.raises(RuntimeError, match="observer fails"):
        trainer.fit()
    assert torch.get_num_threads() == 2


def test_a_round_that_ends_mid_probe_drops_it_and_the_next_starts_afresh() -> None:
    torch.set_num_threads(3)  # the caller's count, neither candidate
    machine = FakeMachine({2: 0.40, 1: 0.16}, share=0.6)
    trainer = _trainer()
    tuner = _tuner(machine, trainer)
    _train(tuner, machine, trainer, 5)  # 2 s at two threads: the first probe is timing one
    assert tuner.queue == [1] and torch.get_num_threads() == 1
    tuner.__exit__(None, None, None)
    assert torch.get_num_threads() == 3 and not tuner.queue and not trainer.events
    machine.time += 600.0  # the caller's work between rounds is no step of the run
    tuner.__enter__()
    assert torch.get_num_threads() == 2
    _train(tuner, machine, trainer, 40)
    assert tuner.clock == pytest.approx(2.0 + 40 * 0.16, abs=1.0)
    assert tuner.current == 1 and trainer.events[0]["reason"] == "first probe"
    tuner.__exit__(None, None, None)
    assert torch.get_num_threads() == 3


def test_a_real_run_logs_its_probes_and_gives_the_threads_back(tmp_path, monkeypatch) -> None:
    if torch.get_num_threads() < 2:
        torch.set_num_threads(2)
    before = torch.get_num_threads()
    # Every reading asks for a probe: this run's probes are timed on real steps.
    monkeypatch.setattr(threads_module, "MIN_SHARE", 10.0)
    monkeypatch.setattr(threads_module, "CHECK_SECONDS", 0.0)
    monkeypatch.setattr(threads_module, "TRIAL_SECONDS", 0.0)
    monkeypatch.setattr(threads_module, "FIRST_PROBE_SECONDS", 0.0)
    monkeypatch.setattr(threads_module, "MIN_GAP_SECONDS", 0.0)
    trainer = Trainer(config=_cfg("train.max_steps=60"), run_dir=tmp_path / "run")
    assert any(isinstance(o, ThreadTuner) for o in trainer.observers.all)
    trainer.run(until=30)
    assert torch.get_num_threads() == before
    trainer.fit()
    assert torch.get_num_threads() == before
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    probes = [e for e in map(json.loads, lines) if e["split"] == "threads"]
    assert probes, "no probe was logged"
    for probe in probes:
        assert set(probe["step_seconds"]) == {str(c) for c in candidates(before)}
        assert all(s > 0 for s in probe["step_seconds"].values())
        assert probe["threads"] in candidates(before)


def test_deterministic_runs_are_not_tuned(tmp_path) -> None:
    trainer = Trainer(config=_cfg("train.deterministic=true"), run_dir=tmp_path / "run")
    assert not any(isinstance(o, ThreadTuner) for o in trainer.observers.all)
    torch.use_deterministic_algorithms(False)


def test_a_single_thread_short_of_cpu_is_not_probed_over_and_over() -> None:
    # Beside two busy processes one thread gets 2/3 of a core whatever the tuner does: after
    # the probe that chose it, a low share alone asks for no more, and other reasons back off.
    machine = FakeMachine({2: 0.5, 1: 0.15}, share=0.67)
    trainer = _trainer()
    tuner = _tuner(machine, trainer)
    _train(tuner, machine, trainer, 400)  # 60 s
    assert tuner.current == 1
    assert len(trainer.events) == 1


def test_probes_that_keep_the_count_back_off() -> None:
    machine = FakeMachine({2: 0.1, 1: 0.16}, share=0.5)  # a share that keeps asking
    trainer = _trainer()
    tuner = _tuner(machine, trainer)
    _train(tuner, machine, trainer, 1000)  # 100 s
    at = [e["step"] for e in trainer.events]
    gaps = [b - a for a, b in zip(at, at[1:], strict=False)]
    assert all(e["threads"] == 2 for e in trainer.events)
    assert len(at) <= 5 and gaps == sorted(gaps)  # 5, 10, 20, 40 s apart
