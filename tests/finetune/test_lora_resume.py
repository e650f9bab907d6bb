"""A LoRA run on a pretrained checkpoint saves its adapters alone (hone.checkpoint.io's
`save_weights`, hone.finetune.frozen_base): checkpoints the size of the adapters and their
optimizer state, a SIGKILLed run that resumes to bit-identical adapters, and a base that
changed since training refused in one line.

The runs train the tiny Llama of tests/pretrained on a text file, adapter dropout on (the
global RNG matters between steps), on one thread like the subprocess.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import hone
from hone.checkpoint import frozen_base, saved_frozen_base
from hone.cli import main
from hone.config import load_config
from hone.errors import ConfigError
from hone.finetune.lora import adapter_parameters
from tests.checkpoint.helpers import checkpoint_steps, same_weights, weights
from tests.checkpoint.test_kill import start, wait_until, write_config

pytest.importorskip("transformers")


def overrides(base: Path, text: Path, steps: int) -> list[str]:
    return [
        f"model.path={base}", f"data.path={text}", "model.block_size=32",
        "lora.enabled=true", "lora.rank=4", "lora.dropout=0.1", "optim.lr=1e-2",
        "schedule.warmup_steps=0", f"train.max_steps={steps}", "train.checkpoint_every=4",
        "train.batch_size=4", "train.eval_every=0", "train.eval_batches=1",
        "train.sample_tokens=0", "train.precision=fp32", "train.threads=1",
        "log.tensorboard=false", "log.progress=off", "log.stats_every=0", "log.every=1",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def llama(tiny_checkpoint: Callable[[str], Path]) -> Path:
    return tiny_checkpoint("llama")


def files_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_a_sigkilled_lora_run_resumes_to_the_same_adapters(
    llama: Path, notes: Path, tmp_path: Path
) -> None:
    """Killed (a real SIGKILL, from outside) after its first checkpoint and resumed with
    `hone train --resume`: the adapters end bit-identical to an uninterrupted run's, and
    every checkpoint on the way held the adapters and their optimizer state alone."""
    cfg = load_config("pretrained-text", overrides(llama, notes, steps=24))
    reference = hone.Trainer(config=cfg, run_dir=tmp_path / "ref")
    reference.fit()
    run = tmp_path / "run"
    proc = start([write_config(cfg, tmp_path / "run.toml"), "--run-dir", str(run)])
    wait_until(proc, lambda: bool(checkpoint_steps(run)))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert max(checkpoint_steps(run)) < 24  # killed before the end
    assert main(["train", "--resume", str(run)]) == 0  # in this process: one start saved

    ours, theirs = weights(run), weights(tmp_path / "ref")
    assert same_weights(ours, theirs)
    assert sorted(ours) == sorted(adapter_parameters(reference.model))  # adapters alone
    # Every checkpoint: the adapters (fp32), then Adam's two moments of them, then the rest.
    adapter_bytes = sum(p.numel() * 4 for p in adapter_parameters(reference.model).values())
    base_bytes = (llama / "model.safetensors").stat().st_size
    assert adapter_bytes * 20 < base_bytes
    for step in checkpoint_steps(run):
        folder = run / f"checkpoints/step-{step:07d}"
        assert (folder / "model.safetensors").stat().st_size < adapter_bytes + 8192
        assert files_bytes(folder) < 3 * adapter_bytes + 64 * 1024 < base_bytes / 4
        saved = saved_frozen_base(folder / "model.safetensors")
        assert saved is not None and saved["path"] == str(llama)
        assert saved["files"]["model.safetensors"]["bytes"] == base_bytes


def test_a_changed_base_is_refused_in_one_line(llama: Path, notes: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    shutil.copytree(llama, base)
    cfg = load_config("pretrained-text", overrides(base, notes, steps=4))
    trainer = hone.Trainer(config=cfg, run_dir=tmp_path / "run")
    trainer.fit()
    loaded = hone.load_run(tmp_path / "run", device="cpu")  # the same base: loads
    assert same_weights(dict(loaded.model.state_dict()), dict(trainer.model.state_dict()))
    # One weight of the base nudged, the file rewritten: the same size, another sha256.
    path = base / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(path))
    name = next(iter(tensors))
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ConfigError, match="model.safetensors has changed since") as refused:
        hone.load_run(tmp_path / "run", device="cpu")
    assert "\n" not in str(refused.value)
    with pytest.raises(ConfigError, match="has changed since"):
        resumed = load_config("pretrained-text", overrides(base, notes, steps=8))
        hone.Trainer(config=resumed, run_dir=tmp_path / "run", resume=True)


def test_a_lora_run_on_a_random_model_saves_every_weight(notes: Path, tmp_path: Path) -> None:
    """No checkpoint to rebuild the base from (seeded random weights): the run's files hold
    every weight, as a full run's do, and load back with the same logits."""
    cfg = load_config(
        None,
        [
            "model.name=llama", "model.n_layer=1", "model.n_embd=32", "model.n_head=2",
            "model.block_size=16", "data.name=text", f"data.path={notes}", "data.tokenizer=char",
            "lora.enabled=true", "lora.rank=2", "train.max_steps=2", "train.batch_size=2",
            "train.eval_batches=1", "train.sample_tokens=0", "train.threads=1",
            "log.tensorboard=false", "log.progress=off",
        ],
    )  # fmt: skip
    trainer = hone.Trainer(config=cfg, run_dir=tmp_path / "run")
    trainer.fit()
    assert frozen_base(trainer.converters) is None
    saved = weights(tmp_path / "run")
    assert saved_frozen_base(tmp_path / "run" / "model.safetensors") is None
    assert "blocks.0.mlp.up.weight" in saved and "blocks.0.attn.q.lora_a.weight" in saved
    loaded = hone.load_run(tmp_path / "run", device="cpu")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(loaded.model(ids), trainer.model.eval()(ids))
