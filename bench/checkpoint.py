"""Checkpoint cost: save and load time and size for the GPT recipes, and time to resume.

1. Save/load: the model and AdamW of a recipe (gpt-shakespeare-baseline; gpt2-small), after
   one optimizer step so that the optimizer state exists, written and read back through
   `CheckpointManager` (safetensors + JSON, sha256 manifest, fsync, atomic rename). "load"
   verifies every hash and loads into a fresh model and optimizer. No data set is read: the
   vocabulary is the recipe's (65 characters; the 8192-token BPE for gpt2-small).
2. Resume: a tiny MLP trained for real to step 100 and to step 10,000 (checkpoint at the end),
   then the time from building `Trainer(..., resume=True)` to the end of the first new step,
   in this process (imports excluded), and of the whole `hone train --resume RUN` command.
3. The NaN guard's cost per step: bench/overhead_mlp.py's MLP (64-128-10, batch 64, AdamW),
   CPU time of 200 training steps with the guard and with it replaced by a no-op, alternated.

Run: `.venv/bin/python bench/checkpoint.py` (`--skip-gpt2` for the small recipe alone).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hone.checkpoint import CheckpointManager, rng_state  # noqa: E402
from hone.config import load_config  # noqa: E402
from hone.engine import Trainer  # noqa: E402
from hone.models import ModelSpec, build_model, num_parameters  # noqa: E402
from hone.optim import build_optimizer  # noqa: E402

VOCAB = {"gpt-shakespeare-baseline": 65, "gpt2-small": 8192}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def save_load(recipe: str, rounds: int, root: Path) -> dict[str, float]:
    cfg = load_config(recipe)
    vocab = VOCAB[recipe]
    spec = ModelSpec("lm", (cfg.model.block_size,), vocab, vocab_size=vocab)

    def build() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = build_model(cfg.model, spec)
        return model, build_optimizer(cfg.optim, model, torch.device("cpu"))

    model, optimizer = build()
    for p in model.parameters():  # one step with made-up gradients fills AdamW's state
        p.grad = torch.randn_like(p) * 1e-3
    optimizer.step()
    twin, twin_optimizer = build()
    manager = CheckpointManager(root / recipe, keep_last=1)
    state = {"loop": {"step": 1}, "rng": rng_state()}
    saves, loads = [], []
    for step in range(1, rounds + 1):
        start = time.perf_counter()
        path = manager.save(step, model, optimizer, state)
        saves.append(time.perf_counter() - start)
        start = time.perf_counter()
        checkpoint = manager.newest_valid()
        assert checkpoint is not None
        manager.load(checkpoint, twin, twin_optimizer)
        loads.append(time.perf_counter() - start)
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters(), strict=True)
    )
    return {
        "parameters": num_parameters(model),
        "bytes": folder_bytes(path),
        "save_seconds": statistics.median(saves),
        "load_seconds": statistics.median(loads),
    }


RESUME_RUN = [
    "data.name=synthetic_linear",
    "data.num_samples=2000",
    "model.name=mlp",
    "model.depth=2",
    "model.width=64",
    "loss.name=mse",
    "optim.name=adamw",
    "schedule.name=cosine",
    "schedule.decay_steps=20000",
    "train.batch_size=32",
    "train.max_epochs=0",
    "train.eval_every=1000",
    "train.checkpoint_every=0",
    "log.every=100",
    "log.tensorboard=false",
    "log.progress=off",
]


def resume_seconds(run_dir: Path, steps: int, rounds: int) -> tuple[float, float, float]:
    """(training seconds to reach `steps`, in-process resume -> first new step, CLI command)."""
    cfg = load_config(None, [*RESUME_RUN, f"train.max_steps={steps}"])
    start = time.perf_counter()
    Trainer(config=cfg, run_dir=run_dir).fit()
    train_seconds = time.perf_counter() - start
    extended = load_config(None, [*RESUME_RUN, f"train.max_steps={steps + 1}"])
    in_process = []
    for _ in range(rounds):
        start = time.perf_counter()
        trainer = Trainer(config=extended, run_dir=run_dir, resume=True)
        assert trainer.state.step == steps
        trainer.stepper.step(trainer.batcher.next_step())
        in_process.append(time.perf_counter() - start)
        trainer.log.close()
    # the whole command, imports included; it takes the one new step and finishes the run
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "hone", "train", "--resume", str(run_dir)]
        + [f"--train.max_steps={steps + 1}"],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__)) or "."},
    )
    command = time.perf_counter() - start
    return train_seconds, statistics.median(in_process), command


def guard_overhead(rounds: int, root: Path) -> tuple[float, float]:
    """CPU microseconds per training step of the tiny MLP, with the finiteness check and
    with it replaced by a no-op; alternated, medians. CPU time, not wall time: the check is
    a few percent of a step, less than the noise of a shared machine's clock."""
    from hone.engine.checkpointing import Checkpointing

    cfg = load_config(
        "mlp-digits",
        [
            "data.name=custom",
            "data.target=bench.overhead_mlp:synthetic",
            "data.task=classification",
            "data.normalize=none",
            "model.depth=1",
            "model.width=128",
            "model.dropout=0",
            "schedule.name=constant",
            "schedule.warmup_steps=0",
            "train.max_epochs=0",
            "train.max_steps=1000000",
            "log.tensorboard=false",
        ],
    )
    trainer = Trainer(config=cfg, run_dir=root)
    checked = Checkpointing.step_is_finite

    def unchecked(self: Checkpointing, *args: object) -> bool:
        self.step_ok = True
        return True

    times: dict[str, list[float]] = {"on": [], "off": []}
    for r in range(rounds):
        for mode in ("on", "off") if r % 2 else ("off", "on"):
            Checkpointing.step_is_finite = checked if mode == "on" else unchecked  # type: ignore[method-assign]
            start = time.process_time()
            for _ in range(200):
                trainer.stepper.step(trainer.batcher.next_step())
            times[mode].append((time.process_time() - start) / 200 * 1e6)
    Checkpointing.step_is_finite = checked  # type: ignore[method-assign]
    return statistics.median(times["on"]), statistics.median(times["off"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-gpt2", action="store_true")
    parser.add_argument("--guard-rounds", type=int, default=40)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    recipes = ["gpt-shakespeare-baseline"] + ([] if args.skip_gpt2 else ["gpt2-small"])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print("| recipe | parameters | checkpoint size | save | load (verify + load) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for recipe in recipes:
            r = save_load(recipe, args.rounds, root / "saves")
            print(
                f"| {recipe} | {r['parameters'] / 1e6:.2f} M | {r['bytes'] / 2**20:.1f} MiB | "
                f"{r['save_seconds']:.3f} s | {r['load_seconds']:.3f} s |"
            )
        print()
        print("| resumed at step | training to get there | resume -> first new step | "
              "`hone train --resume` (1 step, imports, final eval) |")  # fmt: skip
        print("| ---: | ---: | ---: | ---: |")
        for steps in (100, 10_000):
            train, first, command = resume_seconds(root / f"resume-{steps}", steps, args.rounds)
            print(f"| {steps:,} | {train:.1f} s | {first * 1000:.0f} ms | {command:.2f} s |")
        print()
        on, off = guard_overhead(args.guard_rounds, root / "guard")
        print(
            f"NaN guard, tiny MLP: {on:.0f} us CPU per step with it, {off:.0f} us without "
            f"({(on / off - 1) * 100:+.1f}%)"
        )


if __name__ == "__main__":
    main()
