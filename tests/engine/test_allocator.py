"""hone.engine.allocator: while a run trains, memory a step frees stays in the process (no
page is faulted in again), and afterwards it goes back to the kernel (in a fresh interpreter:
malloc's settings are the process's); the trainer holds it for its rounds and no longer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hone.engine import allocator
from hone.engine.allocator import glibc

SCRIPT = """
import json, resource, torch
from hone.engine.allocator import freed_memory_kept

def faults_of_a_step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.ones(2 << 20) for _ in range(24)]  # 24 blocks of 8 MiB, as activations
    big = torch.ones(16 << 20)  # 64 MiB: past malloc's mmap threshold
    del blocks, big
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def rss_mib():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024

faults_of_a_step()
result = {"plain": faults_of_a_step()}
with freed_memory_kept():
    with freed_memory_kept():  # a nested round changes nothing
        faults_of_a_step()
        result["kept"] = faults_of_a_step()
        result["held_rss"] = rss_mib()
    result["inner_exit_rss"] = rss_mib()
result["after_rss"] = rss_mib()
print(json.dumps(result))
"""


@pytest.mark.skipif(glibc() is None, reason="glibc's malloc only")
def test_freed_memory_is_kept_while_training_and_given_back_after() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    # 256 MiB made and freed: 65,536 pages faulted in afresh without the setting
    assert result["plain"] > 20_000
    assert result["kept"] < 500
    assert result["inner_exit_rss"] > result["held_rss"] - 16  # still held
    assert result["after_rss"] < result["held_rss"] - 150  # the freed ~250 MiB given back


def test_the_trainer_keeps_freed_memory_while_it_trains_and_only_then(tmp_path: Path) -> None:
    from hone.config import load_config
    from hone.engine import Observer, Trainer

    class Depth(Observer):
        seen: list[int] = []

        def on_step_end(self, trainer: Trainer, loss: object) -> None:
            self.seen.append(allocator._depth)

    overrides = ["data.name=synthetic_linear", "data.num_samples=100", "loss.name=mse"]
    overrides += ["model.name=mlp", "model.depth=1", "train.batch_size=20", "log.tensorboard=false"]
    trainer = Trainer(
        config=load_config(None, [*overrides, "train.max_steps=6"]),
        run_dir=tmp_path / "run",
        observers=[Depth()],
    )
    trainer.run(until=3)  # a round
    assert Depth.seen == [1, 1, 1] and allocator._depth == 0
    trainer.fit()
    assert Depth.seen == [1] * 6 and allocator._depth == 0
