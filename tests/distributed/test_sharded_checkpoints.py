"""Sharded (DCP) checkpoints: written by 2 processes, resumed by 1, 2 and 4, exactly.

The reference is one uninterrupted 2-process FSDP run of 40 steps with a checkpoint at step
20. Copies of its run directory are resumed from that checkpoint at other world sizes; each
must finish where the reference finished: bit for bit at the same world size, and to the
float32 rounding of a different summation order at another one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from hone.checkpoint import verify
from hone.config import load_config
from hone.engine import Trainer
from hone.engine.inference import evaluate_run
from tests.distributed.helpers import (
    gpt_config,
    max_weight_difference,
    run_group,
    train_losses,
)

STEP20 = "checkpoints/step-0000020"


def _entry(folder: Path, run_dir: Path, resume: Path | None = None) -> dict:
    config, base = gpt_config(folder)
    overrides = [
        *[o for o in base if not o.startswith("train.max_steps")],
        "train.max_steps=40",
        "train.checkpoint_every=20",
        "train.eval_every=20",
        "dist.strategy=fsdp",
    ]
    entry = {"config": config, "overrides": overrides, "run_dir": str(run_dir)}
    return {**entry, "resume": str(resume)} if resume else entry


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The 2-process reference, and copies resumed from its step 20 by 2 processes and 1."""
    folder = tmp_path_factory.mktemp("sharded")
    ref, two, one = folder / "reference", folder / "resumed-2", folder / "resumed-1"
    run_group(
        [_entry(folder, ref), {"copy": [str(ref), str(two)]}, _entry(folder, two, two / STEP20)],
        folder,
    )
    shutil.copytree(ref, one)
    single = _entry(folder, one, one / STEP20)
    Trainer(
        config=load_config(single["config"], single["overrides"]), run_dir=one, resume=one / STEP20
    ).fit()
    return {"reference": ref, "1": one, "2": two}


@pytest.fixture(scope="module")
def resumed_by_four(runs: dict[str, Path]) -> Path:
    folder = runs["reference"].parent
    four = folder / "resumed-4"
    shutil.copytree(runs["reference"], four)
    run_group([_entry(folder, four, four / STEP20)], folder, nproc=4)
    return four


def test_checkpoint_is_sharded_safetensors_sealed_by_its_manifest(runs: dict[str, Path]) -> None:
    folder = runs["reference"] / STEP20
    manifest = verify(folder)  # raises on any pickle, unknown or damaged file
    shards = sorted(p.name for p in (folder / "sharded").iterdir())
    assert shards == [f"shard-0000{r}-model-00001-of-00001.safetensors" for r in (1, 2)]
    assert {f"sharded/{s}" for s in shards} <= set(manifest["files"])
    # Each rank wrote its half of the sharded parameters (FSDP shards dim 0 of each).
    halves = [load_file(folder / "sharded" / s) for s in shards]
    qkv = "model/blocks.0.attn.qkv.weight"
    assert halves[0][qkv].shape == halves[1][qkv].shape == (48, 32)
    assert json.loads((folder / "optimizer_groups.json").read_text())["param_groups"]


def check_resumed(ref: Path, resumed: Path, exact: bool) -> None:
    ref_losses, losses = train_losses(ref), train_losses(resumed)
    assert len(losses) == 40  # 20 from the first run's log, 20 logged after the resume
    if exact:  # the same shards, reductions and kernels: the very same numbers
        assert losses == ref_losses
        assert max_weight_difference(ref, resumed) == 0.0
    else:
        assert max(abs(a - b) for a, b in zip(losses, ref_losses, strict=True)) < 1e-5
        assert max_weight_difference(ref, resumed) < 1e-6


def test_resume_by_two_processes_is_exact(runs: dict[str, Path]) -> None:
    check_resumed(runs["reference"], runs["2"], exact=True)


def test_resume_in_one_process(runs: dict[str, Path]) -> None:
    check_resumed(runs["reference"], runs["1"], exact=False)


@pytest.mark.slow  # four processes on a small machine: about 30 s
def test_resume_by_four_processes(runs: dict[str, Path], resumed_by_four: Path) -> None:
    check_resumed(runs["reference"], resumed_by_four, exact=False)


def test_consolidated_model_is_read_by_single_process_tools(runs: dict[str, Path]) -> None:
    metrics = evaluate_run(runs["reference"], "val", "cpu")
    summary = json.loads((runs["reference"] / "summary.json").read_text())
    assert metrics["loss"] == pytest.approx(summary["final_val_loss"], rel=1e-5)
