"""`hone compress --distill`: a smaller student trained by hone's Trainer on the teacher's soft
targets, a run that `hone sample` and `hone eval` use, a table with both models, one-line
errors for a student that cannot learn from the teacher."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hone.cli import main
from hone.compress import Distill
from hone.config import load_config
from hone.engine import Trainer
from hone.errors import ConfigError
from hone.run_files import COMPRESS, CONFIG, CONVERTERS, METRICS, MODEL, SUMMARY, TOKENIZER
from tests.compress.conftest import QUIET, TINY_GPT, one_thread_in_tmp

TEACHER = [*TINY_GPT, "train.max_steps=60"]  # n_embd 32
STUDENT = [*TINY_GPT, "model.n_embd=16", "train.max_steps=30"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny char-GPT teacher, its student distilled by the command line, and the same
    student trained without the teacher."""
    root = tmp_path_factory.mktemp("runs")
    with one_thread_in_tmp(tmp_path_factory):
        Trainer(config=load_config("gpt-shakespeare-char", TEACHER), run_dir=root / "teacher").fit()
        Trainer(config=load_config("gpt-shakespeare-char", STUDENT), run_dir=root / "alone").fit()
        args = ["compress", str(root / "teacher"), "--distill", "gpt-shakespeare-char"]
        options = ["--temperature", "3", "--max-drop", "100", "--repeats", "2"]
        assert main([*args, *[f"--{o}" for o in STUDENT], *options]) == 0
    return {
        "teacher": root / "teacher",
        "student": root / "teacher-distilled",
        "alone": root / "alone",
    }


def test_the_table_has_the_teacher_and_the_smaller_student(runs) -> None:
    table = json.loads((runs["student"] / COMPRESS).read_text())
    assert table["method"] == "distill"
    details = table["details"]
    assert details["temperature"] == 3 and details["alpha"] == 0.5 and details["steps"] == 30
    assert details["student"] == "gpt-shakespeare-char" and "val_loss" in details
    a, b = table["original"], table["compressed"]
    assert b["parameters"] < a["parameters"] / 2.5  # half the width: about a third
    assert a["parameters"] == details["teacher_parameters"]
    assert b["parameters"] == details["student_model"]["parameters"]
    assert "tokens_per_second" in a and "tokens_per_second" in b
    assert table["gate"]["metric"] == "loss"


def test_the_student_is_a_run_that_sample_and_eval_use(runs, capsys) -> None:
    new = runs["student"]
    names = {p.name for p in new.iterdir()}
    assert {CONFIG, METRICS, SUMMARY, MODEL, TOKENIZER, COMPRESS} <= names
    assert CONVERTERS not in names and "checkpoints" not in names
    assert load_config(str(new / CONFIG)).model.arch.n_embd == 16
    match, _, _ = filecmp.cmpfiles(
        new / TOKENIZER, runs["teacher"] / TOKENIZER, ["tokenizer.json"], shallow=False
    )
    assert match == ["tokenizer.json"]  # the teacher's tokens
    args = ["sample", str(new), "--prompt", "RO", "--max-new-tokens", "20", "--seed", "1"]
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("RO")
    assert main(["eval", str(new)]) == 0
    loss = json.loads((new / "eval-val.json").read_text())["loss"]
    assert loss == pytest.approx(
        json.loads((new / COMPRESS).read_text())["compressed"]["metric"]["value"]
    )


def test_the_teacher_changed_what_the_student_learned(runs) -> None:
    # The same student, seed and batches: only the teacher's soft targets differ.
    distilled, alone = load_file(runs["student"] / MODEL), load_file(runs["alone"] / MODEL)
    assert distilled.keys() == alone.keys()
    assert not all(torch.equal(distilled[k], alone[k]) for k in distilled)
    train_losses = [
        e["loss"] for e in map(json.loads, open(runs["student"] / METRICS)) if e["split"] == "train"
    ]
    assert train_losses and all(loss > 0 for loss in train_losses)


def test_bad_students_are_one_line_exit_2_and_write_nothing(runs, tmp_path, capsys) -> None:
    teacher = str(runs["teacher"])
    student = ["--distill", "gpt-shakespeare-char", *[f"--{o}" for o in STUDENT]]
    cases = {
        "--temperature must be above 0, got 0": [*student, "--temperature", "0"],
        "--alpha (the weight of the teacher's soft targets) must be between 0 and 1, got 2": [
            *student,
            "--alpha",
            "2",
        ],
        "differ from the teacher's (1, 32, 84), so it cannot learn its soft targets; set --model.vocab_size=84": [
            *student,
            "--model.vocab_size=100",
        ],
        "set --model.block_size=32 or less": [*student, "--model.block_size=64"],
        "reads feature vectors, but the data is a token stream": [
            "--distill",
            "mlp-digits",
            *[f"--{o}" for o in QUIET],
        ],
        "no recipe or config file named": ["--distill", "no-such-recipe"],
        "--alpha goes with --distill, not --prune": ["--prune", "0.5", "--alpha", "0.3"],
    }
    before = sorted(tmp_path.rglob("*")), sorted(runs["teacher"].parent.iterdir())
    for message, args in cases.items():
        assert main(["compress", teacher, *args, "--output", str(tmp_path / "x")]) == 2, message
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (message, err)
    assert (sorted(tmp_path.rglob("*")), sorted(runs["teacher"].parent.iterdir())) == before


def test_the_student_reads_the_teachers_data() -> None:
    method = Distill("mlp-digits", ["data.name=synthetic_linear"])
    assert method.cfg.data.name == "synthetic_linear"  # until check() hands it the teacher's
    with pytest.raises(ConfigError, match="--temperature must be above 0"):
        Distill("mlp-digits", temperature=-1)
