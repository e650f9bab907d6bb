"""`hone eval RUN --generate` (hone.engine.judge): held-out prompts written as training wrote
them, greedy answers scored by exact match and containment, the model before fine-tuning (the
run's checkpoint) beside the run, and one-line refusals of runs it cannot judge.

One LoRA run of a few steps (a module fixture, from the tiny chat Llama of test_learning.py)
serves the tests: what the scores mean is checked by test_learning.py, where the model learns.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import hone
from hone.cli import main
from hone.engine.chat import chat_prompt_ids
from hone.engine.inference import LoadedRun
from hone.engine.judge import RESULT_FILE, HeldOut, held_out, score
from tests.finetune.test_learning import EXAMPLES, QUIET, chat_llama, lora_overrides


def test_exact_match_and_containment_are_fractions_of_the_prompts() -> None:
    prompts = [HeldOut(f"line {i}", [0], reference) for i, reference in enumerate("ab")]
    assert score([" [a] \n", "[b]"], [HeldOut("x", [0], "[a]"), HeldOut("y", [0], "[b]")]) == {
        "exact_match": 1.0,
        "contains": 1.0,
    }
    assert score(["Sure: a", "c"], prompts) == {"exact_match": 0.0, "contains": 0.5}
    assert score(["a", "b and more"], prompts) == {"exact_match": 0.5, "contains": 1.0}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chat_llama(tmp_path_factory.mktemp("chat-llama"))


@pytest.fixture(scope="module")
def run(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four LoRA steps on the example task: a chat run with held-out records."""
    folder = tmp_path_factory.mktemp("runs") / "brackets"
    overrides = [*lora_overrides(checkpoint), "train.max_steps=4"]
    hone.Trainer(config="smollm2-135m-lora", overrides=overrides, run_dir=folder).fit()
    return folder


def test_held_out_prompts_are_the_template_s_generation_prompts(run: Path) -> None:
    loaded = LoadedRun.load(run)
    prompts = held_out(loaded, limit=3)
    records = [json.loads(line) for line in (EXAMPLES / "val.jsonl").read_text().splitlines()]
    for prompt, record in zip(prompts, records, strict=False):
        user, answer = record["messages"]
        assert prompt.reference == answer["content"]
        assert prompt.prompt_ids == chat_prompt_ids(loaded.tokenizer, [user])
    assert [p.where for p in prompts] == [f"val.jsonl line {i}" for i in (1, 2, 3)]


def test_eval_generate_scores_before_and_after_and_writes_every_answer(
    run: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", str(run), "--generate", "--limit", "6", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((run / RESULT_FILE).read_text())
    assert printed == written
    assert written["num_prompts"] == 6 and written["max_new_tokens"] == 6 + 8  # "[tavo]": 6
    before, after = written["models"]["before"], written["models"]["after"]
    assert written["base"] == str(checkpoint.resolve())  # the run's model.path
    for model in (before, after):
        assert set(model) == {"loss", "perplexity", "exact_match", "contains", "answers"}
        assert len(model["answers"]) == 6 and 0 <= model["exact_match"] <= model["contains"] <= 1
    # Four steps have moved the adapters: the answers' loss is below the checkpoint's.
    assert after["loss"] < before["loss"]
    assert main(["eval", str(run), "--generate", "--limit", "2"]) == 0
    table = capsys.readouterr().out
    assert "before (base checkpoint)" in table and "exact match" in table


def test_plain_eval_of_a_chat_run_is_the_loss_on_its_answers(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", str(run), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    loss = json.loads((run / RESULT_FILE).read_text())["models"]["after"]["loss"]
    assert metrics["loss"] == pytest.approx(loss, rel=1e-5)


@pytest.mark.parametrize(
    ("arguments", "needle"),
    [
        (["--data.val_path="], "has no held-out records to answer (data.val_path is empty)"),
        (["--split", "train"], "--generate answers the held-out prompts (data.val_path)"),
        (["--backend", "onnx"], "--generate runs the models on torch"),
    ],
)
def test_what_eval_generate_refuses_in_one_line(
    run: Path, arguments: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", str(run), "--generate", *arguments]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_a_run_on_text_is_not_judged(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("Put the word in brackets: tavo\n[tavo]\n" * 50, encoding="utf-8")
    hone.Trainer(
        config="pretrained-text",
        overrides=[f"model.path={checkpoint}", f"data.path={notes}", "model.block_size=32",
                   "train.max_steps=1", "train.batch_size=2", *QUIET],
        run_dir=tmp_path / "text",
    ).fit()  # fmt: skip
    assert main(["eval", str(tmp_path / "text"), "--generate"]) == 2
    err = capsys.readouterr().err
    assert "trained on data.name = 'text'; --generate scores answers" in err
    assert len(err.strip().splitlines()) == 1
