"""The checkpoint directory: manifest, damage detection and fallback, retention, safety."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from hone.checkpoint import CheckpointManager, UnsafeCheckpoint, verify
from hone.checkpoint.format import CorruptCheckpoint
from hone.cli import main
from hone.engine import Trainer
from tests.checkpoint.helpers import (
    LINREG,
    MLP,
    checkpoint_steps,
    config,
    manifest,
    same_weights,
    train_steps,
    weights,
)

RUN = [*LINREG, "optim.name=sgd", "train.max_steps=15", "train.checkpoint_every=5"]


@pytest.fixture
def finished(tmp_path):
    """A run of 15 steps with checkpoints 5, 10, 15."""
    Trainer(config=config(*RUN), run_dir=tmp_path / "run").fit()
    return tmp_path / "run"


def resume_from(run_dir, steps: int = 15) -> Trainer:
    trainer = Trainer(
        config=config(*RUN[:-2], f"train.max_steps={steps}"), run_dir=run_dir, resume=True
    )
    return trainer


def test_manifest_lists_every_file_with_its_hash(finished) -> None:
    assert checkpoint_steps(finished) == [5, 10, 15]
    folder = finished / "checkpoints/step-0000015"
    m = manifest(finished, 15)
    assert m["step"] == 15 and m["format"] == "hone-checkpoint"
    names = {p.name for p in folder.iterdir()} - {"manifest.json"}
    assert set(m["files"]) == names
    assert {"model.safetensors", "optimizer.safetensors", "trainer.json"} <= names
    assert not [p for p in finished.rglob("*") if p.suffix in {".pt", ".pkl", ".bin"}]
    assert verify(folder) == m


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("model.safetensors", "truncate"),
        ("optimizer.safetensors", "flip"),
        ("trainer.json", "flip"),
        ("manifest.json", "truncate"),
    ],
)
def test_damaged_newest_checkpoint_falls_back(finished, name, damage) -> None:
    path = finished / "checkpoints/step-0000015" / name
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint):
        verify(path.parent)
    with pytest.warns(UserWarning, match="skipping damaged checkpoint") as warned:
        trainer = resume_from(finished, steps=20)
    damaged = [w for w in warned if "skipping damaged" in str(w.message)]
    assert len(damaged) == 1 and "step-0000015" in str(damaged[0].message)
    assert trainer.state.step == 10
    assert checkpoint_steps(finished) == [5, 10]  # the damaged one is gone
    trainer.fit()
    assert train_steps(finished) == list(range(1, 21))


def test_resumed_from_a_fallback_matches_the_reference(tmp_path, finished) -> None:
    (finished / "checkpoints/step-0000015/model.safetensors").write_bytes(b"")
    resume_from(finished).fit()
    Trainer(config=config(*RUN), run_dir=tmp_path / "ref").fit()
    assert same_weights(weights(tmp_path / "ref"), weights(finished))


def test_leftovers_of_an_interrupted_save_are_cleaned(finished) -> None:
    partial = finished / "checkpoints/.tmp-step-0000020"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    no_manifest = finished / "checkpoints/step-0000025"
    no_manifest.mkdir()
    (no_manifest / "model.safetensors").write_bytes(b"half")
    trainer = resume_from(finished, steps=15)
    assert trainer.state.step == 15 and not partial.exists() and not no_manifest.exists()


def _payload(canary) -> bytes:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {canary}",))

    return pickle.dumps(Evil(), protocol=4)


@pytest.mark.parametrize("where", ["extra", "replace", "torch_zip", "run_dir"])
def test_malicious_pickle_is_refused(tmp_path, finished, capsys, where) -> None:
    canary = tmp_path / "canary"
    folder = finished / "checkpoints/step-0000015"
    if where == "extra":
        (folder / "model.pt").write_bytes(_payload(canary))
    elif where == "replace":  # a pickle where the safetensors file is expected
        (folder / "optimizer.safetensors").write_bytes(_payload(canary))
    elif where == "torch_zip":
        torch.save({"x": 1}, folder / "trainer.safetensors")  # torch.save's zip format
    else:
        (finished / "pytorch_model.bin").write_bytes(_payload(canary))
    with pytest.raises(UnsafeCheckpoint, match="pickle"):
        resume_from(finished)
    code = main(["train", "--resume", str(finished)])
    assert code == 2 and "pickle" in capsys.readouterr().err
    assert not canary.exists()


def test_a_file_not_in_the_manifest_is_refused(finished) -> None:
    (finished / "checkpoints/step-0000015/notes.txt").write_text("hello")
    with pytest.raises(UnsafeCheckpoint, match="not in its manifest"):
        resume_from(finished)


def test_retention_keeps_the_newest_and_the_best(tmp_path) -> None:
    overrides = [
        *MLP,
        "optim.name=sgd",
        "optim.lr=5.0",  # a bouncing validation loss: the best is not the last
        "train.max_steps=40",
        "train.checkpoint_every=4",
        "train.eval_every=4",
        "train.keep_last=2",
        "train.keep_best=true",
    ]
    Trainer(config=config(*overrides), run_dir=tmp_path / "run").fit()
    vals = [
        (e["step"], e["loss"])
        for e in map(json.loads, (tmp_path / "run/metrics.jsonl").read_text().splitlines())
        if e["split"] == "val"
    ]
    best_step = min(vals, key=lambda sv: sv[1])[0]
    assert best_step < 36  # else the test would not tell keep_best from keep_last
    assert checkpoint_steps(tmp_path / "run") == sorted({36, 40, best_step})
    manager = CheckpointManager(tmp_path / "run/checkpoints", keep_last=2, keep_best=True)
    assert manager.best()[0] == best_step
