"""Chat and instruction data (hone.finetune.chat_data), packing (hone.finetune.packing) and the
per-token loss of example batches: formats, labels found on token ids, one-line errors,
truncation that is counted, packed rows that compute what unpacked ones do, and gradient
accumulation that gives the loss of one batch however the tokens fall into micro-batches."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import hone
from hone.config import load_config
from hone.data import build_data
from hone.data.base import ExampleData
from hone.data.batching import IGNORE_INDEX, ExampleBatcher, pad_rows
from hone.errors import ConfigError
from hone.finetune.chat_data import build_chat_data
from hone.models.gpt import GPT, GPTConfig
from hone.models.llama import Llama, LlamaConfig

# ChatML, as Qwen and SmolLM2's instruct checkpoints write it.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
QUESTIONS = [
    ("What is 2 + 2?", "4"),
    ("Name a fox.", "The quick brown fox."),
    ("Say hello.", "Hello world! A tiny model learns nothing."),
    ("Compare thee?", "Shall I compare thee to a summer's day? Thou art more lovely."),
    ("Add a and b in Python.", "def add(a, b):\n    return a + b\n"),
    ("Is it lazy?", "The lazy dog."),
    ("Temperate?", "Thou art more temperate."),
]


def write_chat_tokenizer(folder: Path) -> Path:
    """A checkpoint's tokenizer files without the checkpoint: byte-level (a token per byte,
    no merges), ChatML's markers as special tokens, the ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"eos_token": "<|im_end|>", "pad_token": "<|im_end|>", "chat_template": CHATML}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="session")
def chat_checkpoint(tiny_checkpoint: Callable[[str], Path], tmp_path_factory: Any) -> Path:
    """The tiny Llama checkpoint with a ChatML chat template."""
    folder = tmp_path_factory.mktemp("chat") / "llama-chat"
    shutil.copytree(tiny_checkpoint("llama"), folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "chat_template": CHATML}))
    return folder


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def messages_record(question: str, answer: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def chat_config(tokenizer: Path, path: Path | str, *overrides: str) -> Any:
    return load_config(
        None,
        [
            "model.name=llama",
            "model.block_size=256",
            "data.name=chat",
            f"data.path={path}",
            f"data.tokenizer_path={tokenizer}",
            "data.val_fraction=0",
            "train.max_steps=1",
            *overrides,
        ],
    )


def chat(tokenizer: Path, path: Path | str, *overrides: str) -> ExampleData:
    data = build_data(chat_config(tokenizer, path, *overrides))
    assert isinstance(data, ExampleData)
    return data


def trained_spans(data: ExampleData, row: np.ndarray) -> list[str]:
    """The text of each run of targets that carry the loss."""
    kept = row[1] != IGNORE_INDEX
    edges = np.flatnonzero(np.diff(np.r_[0, kept.astype(int), 0]))
    return [
        data.tokenizer.decode(row[1, a:b].tolist())
        for a, b in zip(edges[::2], edges[1::2], strict=True)
    ]


def test_the_three_formats_and_records_handed_in_read_alike(
    chat_checkpoint: Path, tmp_path: Path
) -> None:
    pairs = QUESTIONS[:3]
    files = {
        "messages": [messages_record(q, a) for q, a in pairs],
        "prompt_completion": [{"prompt": q, "completion": a} for q, a in pairs],
        "alpaca": [{"instruction": q, "input": "", "output": a} for q, a in pairs],
    }
    read = {}
    for fmt, records in files.items():
        read[fmt] = chat(chat_checkpoint, write_jsonl(tmp_path / f"{fmt}.jsonl", records))
        assert f"3 {fmt} records" in read[fmt].description
    rows = [[r.tolist() for r in data.train] for data in read.values()]
    assert rows[0] == rows[1] == rows[2]
    # Alpaca's input follows the instruction a blank line apart, in the user's turn.
    alpaca = chat(
        chat_checkpoint,
        write_jsonl(
            tmp_path / "in.jsonl", [{"instruction": "Add", "input": "2 + 2", "output": "4"}]
        ),
    )
    text = alpaca.tokenizer.decode(alpaca.train[0][0].tolist())
    assert "<|im_start|>user\nAdd\n\n2 + 2<|im_end|>" in text
    # Validation records of their own (data.val_path), in a format of their own.
    both = chat(
        chat_checkpoint, tmp_path / "messages.jsonl", f"data.val_path={tmp_path / 'alpaca.jsonl'}"
    )
    assert [r.tolist() for r in both.val] == rows[
        0
    ] and "3 train / 3 validation" in both.description
    # Records handed in from Python (a datasets.Dataset iterates as these dicts do).
    handed = build_chat_data(chat_config(chat_checkpoint, ""), files["messages"])
    assert [r.tolist() for r in handed.train] == rows[0]


def test_a_datasets_dataset_reads_as_its_records(chat_checkpoint: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    records = [{"prompt": q, "completion": a} for q, a in QUESTIONS[:3]]
    expected = chat(chat_checkpoint, write_jsonl(tmp_path / "chat.jsonl", records)).train
    dataset = datasets.Dataset.from_list(records)
    handed = build_chat_data(chat_config(chat_checkpoint, ""), dataset)  # from Python
    dataset.save_to_disk(str(tmp_path / "saved"))
    saved = chat(chat_checkpoint, tmp_path / "saved")  # data.path = its folder
    for data in (handed, saved):
        assert all(map(np.array_equal, data.train, expected)) and len(data.train) == 3


def test_loss_is_on_the_answers_and_their_end_of_turn_only(
    chat_checkpoint: Path, tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    talk = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a fox."},
            {"role": "assistant", "content": "The quick brown fox."},
            {"role": "user", "content": "And a dog?"},
            {"role": "assistant", "content": "The lazy dog."},
        ]
    }
    data = chat(chat_checkpoint, write_jsonl(tmp_path / "talk.jsonl", [talk]))
    assert trained_spans(data, data.train[0]) == [
        "The quick brown fox.<|im_end|>\n",
        "The lazy dog.<|im_end|>\n",
    ]
    everything = chat(chat_checkpoint, tmp_path / "talk.jsonl", "data.train_on=all")
    assert (everything.train[0][1] != IGNORE_INDEX).all()
    # Without a chat template: prompt + completion + EOS, the loss on the completion and EOS.
    plain = chat(
        tiny_checkpoint("llama"),
        write_jsonl(tmp_path / "plain.jsonl", [{"prompt": "2 + 2 =", "completion": " 4"}]),
    )
    assert trained_spans(plain, plain.train[0]) == [" 4</s>"]
    # (this tokenizer prepends no BOS; the inputs end before the EOS, which is only a target)
    assert plain.tokenizer.decode(plain.train[0][0].tolist()) == "2 + 2 = 4"


def test_prompt_targets_do_not_change_the_loss(chat_checkpoint: Path, tmp_path: Path) -> None:
    records = [messages_record(q, a) for q, a in QUESTIONS[:4]]
    data = chat(chat_checkpoint, write_jsonl(tmp_path / "chat.jsonl", records))
    x, y = pad_rows(data.train, data.pad_id)
    torch.manual_seed(0)
    model = Llama(LlamaConfig(n_layer=2, n_head=2, n_embd=32, block_size=256), 384).eval()
    loss = model(x, targets=y)
    # The same loss as the mean cross-entropy over the answer tokens alone ...
    logits = model(x)
    answer = y != IGNORE_INDEX
    assert torch.allclose(loss, F.cross_entropy(logits[answer], y[answer]), atol=1e-6)
    # ... whatever ids the prompt's positions would have had as targets: they are masked.
    altered = torch.where(answer, y, torch.randint_like(y, 0, 384))
    assert torch.equal(torch.where(answer, altered, IGNORE_INDEX), y)
    assert not torch.allclose(model(x, targets=altered), loss)  # unmasked, they would count


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            {"messages": "hi"},
            "bad.jsonl line 3: 'messages' must be a list of {role, content} objects with "
            'string values, got "hi"',
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}]},
            "bad.jsonl line 3: 'messages' has no assistant turn to learn, got roles ['user']",
        ),
        (
            {"prompt": "a", "completion": 5},
            "bad.jsonl line 3: 'completion' must be a string, got 5",
        ),
        ("{not json", "bad.jsonl line 3: not valid JSON"),
    ],
)
def test_a_bad_record_is_named_by_file_line_and_field(
    chat_checkpoint: Path, tmp_path: Path, line: Any, message: str
) -> None:
    good = json.dumps(messages_record("Hi", "Hello"))
    if line != "{not json":
        good = json.dumps({"prompt": "Hi", "completion": "Hello"}) if "prompt" in line else good
    text = line if isinstance(line, str) else json.dumps(line)
    (tmp_path / "bad.jsonl").write_text(f"{good}\n\n{text}\n")
    with pytest.raises(ConfigError) as error:
        chat(chat_checkpoint, tmp_path / "bad.jsonl")
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_too_long_examples_are_dropped_or_cut_and_counted(
    chat_checkpoint: Path, tmp_path: Path
) -> None:
    digits = "0123456789"  # no merges of them in the tokenizer: a token each
    records = [
        messages_record("Hi", "Hello"),  # fits
        messages_record(digits * 5, "Yes."),  # too long by its prompt
        messages_record("Hi", digits * 8),  # too long by its answer
    ]
    path = write_jsonl(tmp_path / "long.jsonl", records)
    dropped = chat(chat_checkpoint, path, "model.block_size=64")
    assert len(dropped.train) == 1
    assert "2 longer than the 64-token context dropped" in dropped.description
    cut = chat(chat_checkpoint, path, "model.block_size=64", "data.too_long=cut_prompt")
    assert len(cut.train) == 2 and all(row.shape[1] <= 64 for row in cut.train)
    assert "1 longer than the 64-token context dropped, 1 cut at the prompt's start" in (
        cut.description
    )
    assert trained_spans(cut, cut.train[1]) == ["Yes.<|im_end|>\n"]  # the answer whole
    assert cut.train[1][2].tolist() == list(range(64))  # positions from 0 again


def tiny_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "llama": Llama(
            LlamaConfig(n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=256), 384
        ),
        "llama-plain": Llama(
            LlamaConfig(n_layer=2, n_head=2, n_embd=32, block_size=256, attn="plain"), 384
        ),
        "gpt-learned": GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=256), 384),
        "gpt-rope-plain": GPT(
            GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=256, pos="rope", attn="plain"), 384
        ),
    }


@pytest.mark.parametrize("name", ["llama", "llama-plain", "gpt-learned", "gpt-rope-plain"])
def test_packed_rows_compute_what_each_example_does_alone(
    name: str, chat_checkpoint: Path, tmp_path: Path
) -> None:
    records = [messages_record(q, a) for q, a in QUESTIONS]
    data = chat(chat_checkpoint, write_jsonl(tmp_path / "chat.jsonl", records), "data.pack=true")
    assert 1 < len(data.packed_train) < len(data.train)
    model = tiny_models()[name].eval()
    x, y = pad_rows(data.packed_train, data.pad_id, packed=True)  # (B, 2, T), (B, T)
    packed_logits = model(x[:, 0], positions=x[:, 1])
    alone = {}  # each example's logits, keyed by its input ids
    for row in data.train:
        ids = torch.from_numpy(row[0].astype(np.int64))[None]
        alone[tuple(row[0].tolist())] = model(ids)[0]
    for b, row in enumerate(data.packed_train):
        starts = [*np.flatnonzero(row[2] == 0), row.shape[1]]
        for start, end in zip(starts[:-1], starts[1:], strict=False):
            key = tuple(row[0, start:end].tolist())
            assert torch.allclose(packed_logits[b, start:end], alone[key], atol=1e-5)
    # The loss is the mean over the answer tokens however they are packed.
    unpacked = pad_rows(data.train, data.pad_id)
    packed_loss = model(x[:, 0], targets=y, positions=x[:, 1])
    assert torch.allclose(packed_loss, model(unpacked[0], targets=unpacked[1]), atol=1e-5)
    # One example spanning the row: the packed path is the plain causal one.
    ids = x[:1, 0]
    plain = model(ids)
    assert torch.allclose(model(ids, positions=torch.arange(ids.size(1))[None]), plain, atol=1e-5)


def test_accumulation_gives_the_loss_and_gradients_of_one_batch(
    chat_checkpoint: Path, tmp_path: Path
) -> None:
    records = [messages_record(q, a) for q, a in QUESTIONS[:6]]
    path = write_jsonl(tmp_path / "chat.jsonl", records)
    steps = {}
    for grad_accum in (1, 3):
        trainer = hone.Trainer(
            config=chat_config(chat_checkpoint, path),
            overrides=[
                "model.n_layer=2", "model.n_head=2", "model.n_embd=32",
                "train.batch_size=6", f"train.grad_accum={grad_accum}", "train.precision=fp32",
                "optim.name=sgd", "optim.lr=1.0", "optim.momentum=0", "optim.weight_decay=0",
                "schedule.name=constant", "schedule.warmup_steps=0",
            ],
            run_dir=tmp_path / f"accum-{grad_accum}",
        )  # fmt: skip
        batches = trainer.batcher.next_step()
        before = [p.detach().clone() for p in trainer.model.parameters()]
        loss = trainer.stepper.step(batches)
        grads = [b - p.detach() for b, p in zip(before, trainer.model.parameters(), strict=True)]
        steps[grad_accum] = (batches, loss, grads)
    micro = steps[3][0]
    counts = [int((y != IGNORE_INDEX).sum()) for _, y in micro]
    assert len(set(counts)) > 1, counts  # unequal token counts: a plain 1/K would be wrong
    (_, one_loss, one_grads), (_, accumulated, accumulated_grads) = steps[1], steps[3]
    assert torch.allclose(accumulated, one_loss, atol=1e-5)
    for g, h in zip(one_grads, accumulated_grads, strict=True):
        assert torch.allclose(g, h, atol=1e-5)
    assert any(g.abs().max() > 1e-4 for g in one_grads)  # something was learned


def test_a_checkpoint_fine_tunes_on_packed_chat_data(chat_checkpoint: Path, tmp_path: Path) -> None:
    records = [messages_record(q, a) for q, a in QUESTIONS * 2]
    summary = hone.Trainer(
        overrides=[
            "model.name=pretrained", f"model.path={chat_checkpoint}",
            "data.name=chat", f"data.path={write_jsonl(tmp_path / 'chat.jsonl', records)}",
            "data.pack=true", "data.val_fraction=0.25",
            "train.max_steps=2", "train.batch_size=2", "train.grad_accum=2",
            "train.sample_tokens=0",
        ],
        run_dir=tmp_path / "run",
    ).fit()  # fmt: skip
    assert summary["steps"] == 2 and summary["final_val_loss"] < 10
    described = json.loads((tmp_path / "run" / "data.json").read_text())
    assert described["context_length"] == 128  # the checkpoint's, which complete() read


def test_example_batches_shard_pad_and_resume() -> None:
    # Rows of lengths 3 .. 14 whose ids and targets are their length: each tells itself apart.
    rows = [np.stack([np.full(n, n), np.full(n, n), np.arange(n)]) for n in range(3, 15)]
    shards = [ExampleBatcher(rows, 8, 0, 99, rank=r, world_size=2, grad_accum=2) for r in (0, 1)]
    lengths = []
    for x, y in [micro for batcher in shards for micro in batcher.next_step()]:
        assert x.shape == y.shape and x.shape == (2, int(y.max()))  # padded to the longest
        for n, row_x, row_y in zip(y[:, 0].tolist(), x, y, strict=True):
            assert (row_x[n:] == 99).all() and (row_y[n:] == IGNORE_INDEX).all()
            lengths.append(n)
    assert len(set(lengths)) == 8  # one global batch of 8 rows, cut 2 ranks x 2 micro-batches
    again = ExampleBatcher(rows, 8, 0, 99, rank=0, world_size=2, grad_accum=2)
    again.load_state_dict(shards[0].state_dict())
    for (a, b), (c, d) in zip(again.next_step(), shards[0].next_step(), strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)
