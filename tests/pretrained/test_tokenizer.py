"""A pretrained checkpoint's tokenizer against transformers' AutoTokenizer on the same folder:
ids, decoding, special tokens, chat templates (and their sandbox), saving; generation that
stops at the end-of-text id."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from hone.config import ModelConfig, load_config
from hone.data.text.tokenizers import BPETokenizer, load_tokenizer
from hone.engine.inference import LoadedRun
from hone.engine.precision import Precision
from hone.engine.tasks import TASKS
from hone.errors import ConfigError
from hone.models import ModelSpec, build_model
from hone.models.generate import generate, iter_tokens
from hone.pretrained.tokenizer import PretrainedTokenizer

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

CORPUS = [
    "Hello world! The quick brown fox jumps over the lazy dog.\n\n",
    "  Leading spaces,\ttabs and 'quotes' don't matter.\n",
    "Naïve café — 日本語のテキスト 😀 émojis\r\n",
    "def f(x):\n    return x ** 2  # code\n",
    "One paragraph.\n\n\n\nAnother.\n\n",
] * 8

# Real-world chat templates, as their checkpoints ship them.
CHATML = (  # Qwen2 / SmolLM2-style, with a default system message (SmolLM2-Instruct's)
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (  # Meta-Llama-3-8B-Instruct's: the template writes the BOS itself
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
ZEPHYR = """{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>\n' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>\n' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>\n'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}"""  # multi-line: right only with trim_blocks and lstrip_blocks
QWEN_TOOLS = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- elif messages[0]['role'] != 'system' %}
    {{- '<|im_start|>system\\nYou are Qwen, a helpful assistant.<|im_end|>\\n' }}
{%- endif %}
{%- set ns = namespace(turns=0) %}
{%- for message in messages %}
    {%- if not (message.role == 'system' and loop.first and tools) %}
        {%- set ns.turns = ns.turns + 1 %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}"""
MISTRAL = (  # refuses conversations whose roles do not alternate
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + "
    "eos_token}}{% endif %}{% endfor %}"
)

CONVERSATIONS: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "Hi there!"}],
    [
        {"role": "system", "content": "You answer in haiku."},
        {"role": "user", "content": "  Café?  "},
        {"role": "assistant", "content": "日本語 😀\nline two", "tool_calls": None},
        {"role": "user", "content": "<|im_end|> is text here"},
    ],
]
TEXTS = [
    "",
    "a",
    "Hello world!",
    " leading space",
    "   three leading spaces and trailing   ",
    "line one\nline two\n\n\nafter blank lines\r\n",
    "Naïve café — 日本語 😀 ünïcödé",
    "<|im_start|>user\nspecial tokens in text<|im_end|>",
    "<|begin_of_text|>twice?<|eot_id|>",
    "unseen characters: ∮ 𝔘 ℵ",
]


def _train(special: list[str]) -> Any:
    """A tiny byte-level BPE, as GPT-2, Llama 3 and Qwen use: every byte is a token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    return tokenizer


def _save(tokenizer: Any, folder: Path, template: str | None, **special: str) -> Path:
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special)
    if template is not None:
        fast.chat_template = template
    fast.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tokenizer folders as transformers saves them: ChatML (Qwen/SmolLM2-style, no BOS
    added), Llama 3-style (a BOS prepended by the post-processor, several end ids in
    generation_config.json), one without a chat template."""
    from tokenizers import processors

    root = tmp_path_factory.mktemp("pretrained-tokenizers")
    chatml = _train(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    llama = _train(["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                    "<|end_header_id|>", "<|eot_id|>"])  # fmt: skip
    bos = llama.token_to_id("<|begin_of_text|>")
    llama.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
        special_tokens=[("<|begin_of_text|>", bos)],
    )
    folders = {
        "chatml": _save(chatml, root / "chatml", CHATML, eos_token="<|im_end|>",
                        pad_token="<|endoftext|>"),
        "llama3": _save(llama, root / "llama3", LLAMA3, bos_token="<|begin_of_text|>",
                        eos_token="<|eot_id|>"),
        "plain": _save(chatml, root / "plain", None, bos_token="<|endoftext|>",
                       eos_token="<|endoftext|>"),
    }  # fmt: skip
    eos = [llama.token_to_id("<|end_of_text|>"), llama.token_to_id("<|eot_id|>")]
    (root / "llama3" / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))
    return folders


def _pair(folder: Path, template: str | None = None) -> tuple[PretrainedTokenizer, Any]:
    """hone's tokenizer and transformers', loaded from the same folder (`template`, when
    given, replacing the folder's chat template on both)."""
    ours = PretrainedTokenizer.load(folder)
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    if template is not None:
        ours.chat_template, theirs.chat_template = template, template
    return ours, theirs


@pytest.mark.parametrize("name", ["chatml", "llama3"])
def test_ids_and_text_are_transformers(checkpoints: dict[str, Path], name: str) -> None:
    ours, theirs = _pair(checkpoints[name])
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == theirs(text)["input_ids"], text
        assert ours.encode_array(text).tolist() == ids
        assert ours.decode(ids) == theirs.decode(ids), text
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(
            ids, skip_special_tokens=True
        )
        # Byte-level BPE loses nothing: the text comes back, BOS aside.
        assert ours.decode(ours.encode(text, add_special_tokens=False)) == text
    assert ours.vocab_size == len(theirs)
    # The whole text at once, not line by line as BPETokenizer: a token spans newlines.
    assert len(ours.encode("\n\n\n\n", add_special_tokens=False)) < 4


def test_special_tokens_bos_and_end_ids(checkpoints: dict[str, Path]) -> None:
    chatml, llama = (PretrainedTokenizer.load(checkpoints[n]) for n in ("chatml", "llama3"))
    assert (chatml.bos_token, chatml.eos_token, chatml.pad_token) == (
        None, "<|im_end|>", "<|endoftext|>"
    )  # fmt: skip
    assert chatml.eos_ids == (chatml.eos_id,) == (2,) and chatml.pad_id == 0
    assert not chatml.adds_bos and chatml.encode("hi")[0] != chatml.eos_id
    assert llama.adds_bos and llama.encode("hi")[0] == llama.bos_id == 0
    assert llama.encode("hi", add_special_tokens=False) == llama.encode("hi")[1:]
    end_of_text, eot = 1, 4
    # The tokenizer's eos first, then the generation config's others.
    assert (llama.eos_id, llama.eos_ids) == (eot, (eot, end_of_text))
    assert llama.kind == "pretrained"


@pytest.mark.parametrize(
    ("name", "template"),
    [("chatml", None), ("llama3", None), ("chatml", ZEPHYR), ("chatml", QWEN_TOOLS)],
)
def test_chat_templates_render_as_transformers(
    checkpoints: dict[str, Path], name: str, template: str | None
) -> None:
    ours, theirs = _pair(checkpoints[name], template)
    for messages in CONVERSATIONS:
        for prompt in (False, True):
            text = ours.apply_chat_template(messages, add_generation_prompt=prompt)
            assert text == theirs.apply_chat_template(
                messages, add_generation_prompt=prompt, tokenize=False
            )
            ids = ours.apply_chat_template(messages, add_generation_prompt=prompt, tokenize=True)
            assert ids == ours.encode(text, add_special_tokens=False)
    assert "tool_calls" in CONVERSATIONS[1][2]  # the caller's messages are left alone


def test_template_variables_tools_and_refusals(checkpoints: dict[str, Path]) -> None:
    ours, theirs = _pair(checkpoints["chatml"], QWEN_TOOLS)
    tools = [{"name": "weather", "description": "Wetter für <Stadt> & Land", "parameters": {}}]
    messages = CONVERSATIONS[1]
    expected = theirs.apply_chat_template(messages, tools=tools, tokenize=False)
    assert ours.apply_chat_template(messages, tools=tools) == expected
    assert "Wetter für <Stadt> & Land" in expected  # tojson keeps non-ASCII text and HTML

    ours, theirs = _pair(checkpoints["llama3"], MISTRAL)
    alternating = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert ours.apply_chat_template(alternating) == theirs.apply_chat_template(
        alternating, tokenize=False
    )
    with pytest.raises(ConfigError, match="roles must alternate") as refused:
        ours.apply_chat_template(alternating[:1] * 2)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ messages.__class__.__init__.__globals__ }}",
        "{% set _ = messages.append({'role': 'system', 'content': 'pwned'}) %}",
        "{% set _ = messages[0].update({'content': 'pwned'}) %}",
        "{{ dict.update(messages[0], {'content': 'pwned'}) }}",
        "{% set ns = namespace(_secret=1) %}",
        "{% for m in messages %}",  # does not compile
    ],
)
def test_the_sandbox_refuses_harmful_templates(checkpoints: dict[str, Path], template: str) -> None:
    ours = PretrainedTokenizer.load(checkpoints["chatml"])
    ours.chat_template = template
    messages = [{"role": "user", "content": "hi"}]
    reasons = "unsafe|may not store|has no attribute|does not compile"
    with pytest.raises(ConfigError, match=f"^the chat template of .*({reasons})") as refused:
        ours.apply_chat_template(messages)
    assert "\n" not in str(refused.value)
    assert messages == [{"role": "user", "content": "hi"}]


def test_no_chat_template_is_one_line(checkpoints: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="has no chat template"):
        PretrainedTokenizer.load(checkpoints["plain"]).apply_chat_template([])
    with pytest.raises(ConfigError, match="no tokenizer.json"):
        PretrainedTokenizer.load(checkpoints["plain"].parent)


@pytest.mark.parametrize("name", ["chatml", "llama3"])
def test_save_loads_in_transformers_and_hone(
    checkpoints: dict[str, Path], name: str, tmp_path: Path
) -> None:
    ours = PretrainedTokenizer.load(checkpoints[name])
    ours.save(str(tmp_path))
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    again = load_tokenizer(str(tmp_path))
    assert isinstance(again, PretrainedTokenizer)
    for text in TEXTS:
        assert ours.encode(text) == theirs(text)["input_ids"] == again.encode(text), text
    assert again.eos_ids == ours.eos_ids and again.bos_id == ours.bos_id
    messages = CONVERSATIONS[1]
    expected = ours.apply_chat_template(messages, add_generation_prompt=True)
    assert again.apply_chat_template(messages, add_generation_prompt=True) == expected
    assert theirs.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == (
        expected
    )

    # Saved over the checkpoint it came from (whose chat_template.jinja would win), changed.
    copy = shutil.copytree(checkpoints[name], tmp_path / "copy")
    ours.chat_template = ZEPHYR
    ours.save(str(copy))
    assert PretrainedTokenizer.load(copy).chat_template == ZEPHYR
    assert transformers.AutoTokenizer.from_pretrained(str(copy)).chat_template == ZEPHYR


def test_load_tokenizer_tells_a_checkpoint_from_hones_bpe(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    assert isinstance(load_tokenizer(str(checkpoints["chatml"])), PretrainedTokenizer)
    beside = load_tokenizer(str(checkpoints["chatml"] / "tokenizer.json"))
    assert isinstance(beside, PretrainedTokenizer)
    BPETokenizer.train("".join(CORPUS), 300).save(str(tmp_path))
    assert isinstance(load_tokenizer(str(tmp_path)), BPETokenizer)


def test_a_whole_checkpoint_folder(tiny_checkpoint: Callable[[str], Path]) -> None:
    folder = tiny_checkpoint("llama")  # generation_config.json: one eos_token_id, an int
    ours = load_tokenizer(str(folder))
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert isinstance(ours, PretrainedTokenizer)
    assert (ours.bos_id, ours.eos_ids, ours.adds_bos) == (0, (1,), False)
    for text in TEXTS:
        assert ours.encode(text) == theirs(text)["input_ids"], text


# ----------------------------------------------------------------- stopping at the end id
class Table(nn.Module):
    """A language model that always writes `then[last token]` (id 0 where unlisted)."""

    def __init__(self, vocab_size: int, then: dict[int, int]) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.then = torch.zeros(vocab_size, dtype=torch.long)
        self.then[list(then)] = torch.tensor(list(then.values()))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        return nn.functional.one_hot(self.then[idx], self.vocab_size).float()


def test_generation_stops_at_an_end_id(checkpoints: dict[str, Path]) -> None:
    tokenizer = PretrainedTokenizer.load(checkpoints["llama3"])
    eot, (i, a, b, c) = tokenizer.eos_id, [tokenizer.encode(x)[1] for x in "iabc"]
    assert eot is not None and len({eot, i, a, b, c}) == 5
    model = Table(tokenizer.vocab_size, {i: a, a: b, b: eot, eot: c, c: c})
    prompt = torch.tensor([tokenizer.encode("hi")])  # BOS, h, i
    assert list(iter_tokens(model, prompt, 6, temperature=0)) == [a, b, eot, c, c, c]
    drawn = list(iter_tokens(model, prompt, 6, temperature=0, stop_ids=tokenizer.eos_ids))
    assert drawn == [a, b, eot]

    # `hone sample` and the server: the end id ends the text, is counted, is not shown.
    spec = ModelSpec("lm", (16,), tokenizer.vocab_size, vocab_size=tokenizer.vocab_size)
    cfg = load_config(None, ["train.max_steps=1"])
    run = LoadedRun(cfg, TASKS.get("lm"), spec, model, Precision("fp32", torch.device("cpu")),
                    tokenizer)  # fmt: skip
    completion = run.complete("hi", 6, temperature=0)
    assert (completion.text, completion.finish_reason) == ("ab", "stop")
    assert (completion.prompt_tokens, completion.completion_tokens) == (3, 3)


def test_finished_rows_repeat_their_end_id_and_leave_the_others_alone() -> None:
    # Counting up to the end id 8: the rows finish after 3, 5 and 1 steps.
    model = Table(10, {n: n + 1 for n in range(8)} | {8: 9})
    idx = torch.tensor([[0, 5], [1, 3], [2, 7]])
    out = generate(model, idx, 10, temperature=0, stop_ids={8})
    assert out.tolist() == [[0, 5, 6, 7, 8, 8, 8], [1, 3, 4, 5, 6, 7, 8], [2, 7, 8, 8, 8, 8, 8]]
    assert generate(model, idx, 10, temperature=0).size(1) == 12  # no stop ids: all 10 steps

    # A GPT with its cache, sampling: the rows that do not stop draw what they drew without.
    cfg = ModelConfig(name="gpt", n_layer=2, n_head=2, n_embd=16, block_size=12)
    torch.manual_seed(0)
    gpt = build_model(cfg, ModelSpec("lm", (12,), 17, vocab_size=17))
    prompt = torch.randint(0, 17, (3, 4))
    free = generate(gpt, prompt, 8, generator=torch.Generator().manual_seed(1))[:, 4:].tolist()
    stop = free[0][2]  # row 0 stops at its third token
    assert stop not in free[0][:2]
    others = [row for row in (1, 2) if stop not in free[row]]
    assert others, free
    out = generate(gpt, prompt, 8, generator=torch.Generator().manual_seed(1), stop_ids={stop})
    assert out[0, 4:].tolist() == [*free[0][:2], stop, stop, stop, stop, stop, stop]
    for row in others:
        assert out[row, 4:].tolist() == free[row]
