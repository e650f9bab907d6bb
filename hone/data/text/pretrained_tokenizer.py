"""The tokenizer of a pretrained Hugging Face checkpoint, read from its folder.

`tokenizer.json` (the `tokenizers` library's file) does the work: normalizer, pre-tokenizer,
model, post-processor and decoder, so ids match `transformers.AutoTokenizer` on the same
folder. Around it, `tokenizer_config.json` (falling back on `special_tokens_map.json`) names
the special tokens and holds the chat template (or `chat_template.jinja` does), and
`generation_config.json` may name several end-of-sequence ids (Llama 3's instruct models end
a turn with `<|eot_id|>` and a text with `<|end_of_text|>`).

Whether a BOS id is prepended is the post-processor's choice (Llama 3's `TemplateProcessing`
adds `<|begin_of_text|>`; GPT-2 and Qwen add nothing). `add_bos_token` in
tokenizer_config.json is not read: transformers 5 drops it too when a tokenizer.json is there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from hone.errors import ConfigError

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
GENERATION_FILE = "generation_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"


class PretrainedTokenizer:
    """A checkpoint's tokenizer: `encode` and `decode` as transformers does, its special
    tokens, the ids that end generation (`eos_ids`) and its chat template."""

    kind = "pretrained"

    def __init__(
        self,
        tokenizer: Any,
        config: dict[str, Any] | None = None,
        generation_eos_ids: tuple[int, ...] = (),
        name: str = "this checkpoint",
    ) -> None:
        """`tokenizer` is a `tokenizers.Tokenizer`; `config` the tokenizer_config.json data
        (special tokens resolved to strings, `chat_template` a string or absent);
        `generation_eos_ids` the eos_token_id of generation_config.json."""
        self.tokenizer = tokenizer
        self.config = dict(config or {})
        self.name = name
        # Every named special token (bos_token, eos_token, pad_token, ... and model-specific
        # ones such as image_token): chat templates read them as variables.
        self.special_tokens: dict[str, str] = {
            key: value
            for key, value in self.config.items()
            if key.endswith("_token") and isinstance(value, str)
        }
        self.bos_token = self.special_tokens.get("bos_token")
        self.eos_token = self.special_tokens.get("eos_token")
        self.pad_token = self.special_tokens.get("pad_token")
        self.bos_id, self.eos_id, self.pad_id = map(
            self._id, (self.bos_token, self.eos_token, self.pad_token)
        )
        eos = [self.eos_id] if self.eos_id is not None else []
        self.generation_eos_ids = tuple(generation_eos_ids)
        self.eos_ids: tuple[int, ...] = tuple(dict.fromkeys([*eos, *self.generation_eos_ids]))
        # Added tokens (the special ones, often) sit past the model's base vocabulary.
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        probe = tokenizer.encode("a", add_special_tokens=True).ids
        self.adds_bos = self.bos_id is not None and probe[:1] == [self.bos_id]
        chat_template = self.config.get("chat_template")
        self.chat_template: str | None = chat_template if isinstance(chat_template, str) else None
        self._compiled: tuple[str, Any] | None = None  # (source, jinja2.Template)

    @classmethod
    def load(cls, folder: str | Path) -> PretrainedTokenizer:
        """The tokenizer of the checkpoint folder `folder`."""
        from tokenizers import Tokenizer

        folder = Path(folder)
        if not (folder / TOKENIZER_FILE).is_file():
            raise ConfigError(
                f"{folder} has no {TOKENIZER_FILE}; hone reads a checkpoint's fast tokenizer file "
                f"only (not a sentencepiece tokenizer.model): save one with transformers' "
                f"AutoTokenizer.from_pretrained(...).save_pretrained(folder)"
            )
        config = _read_json(folder / CONFIG_FILE)
        special = _read_json(folder / SPECIAL_TOKENS_FILE)
        for key, value in special.items():  # the older file, for what the config leaves out
            if config.get(key) is None:
                config[key] = value
        config = {key: _token_text(value) for key, value in config.items()}
        config["chat_template"] = _chat_template(folder, config.get("chat_template"))
        eos = _read_json(folder / GENERATION_FILE).get("eos_token_id")
        generation_eos_ids = tuple(eos if isinstance(eos, list) else [] if eos is None else [eos])
        tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        return cls(tokenizer, config, tuple(map(int, generation_eos_ids)), name=str(folder))

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self.tokenizer.token_to_id(token)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """The ids of the whole `text` (special tokens written in it included, a BOS
        prepended where the checkpoint does): transformers' `tokenizer(text)["input_ids"]`.
        `add_special_tokens=False` leaves the BOS out, for text that already holds it (a chat
        template's output)."""
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
        return ids

    def encode_array(self, text: str) -> np.ndarray:
        # One call on the whole text, not line by line as BPETokenizer does: a checkpoint's
        # tokens may span newlines ("\n\n" is one token in Llama 3 and Qwen).
        return np.asarray(self.encode(text), dtype=np.uint32)

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        text: str = self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)
        return text

    @overload
    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = False,
        tokenize: Literal[False] = False,
        **extra: Any,
    ) -> str: ...

    @overload
    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = False,
        *,
        tokenize: Literal[True],
        **extra: Any,
    ) -> list[int]: ...

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = False,
        tokenize: bool = False,
        **extra: Any,
    ) -> str | list[int]:
        """`messages` ({"role": ..., "content": ...} dicts) as the checkpoint's chat template
        writes them; with `add_generation_prompt`, followed by the opening of the assistant's
        turn. `extra` reaches the template as variables (`tools`, `enable_thinking`, ...).
        `tokenize=True` gives the ids, without a second BOS (the template writes its own)."""
        from hone.data.text.chat_template import compile_chat_template, render_chat_template

        if self.chat_template is None:
            raise ConfigError(
                f"{self.name} has no chat template (no chat_template in {CONFIG_FILE}, no "
                f"{CHAT_TEMPLATE_FILE}); use a chat (instruct) checkpoint or send plain text"
            )
        if self._compiled is None or self._compiled[0] != self.chat_template:
            source = self.chat_template
            self._compiled = source, compile_chat_template(source, self.name)
        variables = {**self.special_tokens, **extra}
        text = render_chat_template(
            self._compiled[1], self.name, messages, add_generation_prompt, variables
        )
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def save(self, folder: str) -> None:
        """Write tokenizer.json and tokenizer_config.json (with the chat template, which
        transformers 4 reads only there) to `folder`, which transformers' AutoTokenizer then
        loads with the same ids and template. The generation
        config's end ids go to generation_config.json when the folder has none yet (the
        checkpoint writer's file, when it wrote one first, is left alone)."""
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(path / TOKENIZER_FILE))
        config = {**self.config, "chat_template": self.chat_template}
        config = {key: value for key, value in config.items() if value is not None}
        # A class every transformers version maps to the plain tokenizer.json backend.
        config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
        _write_json(path / CONFIG_FILE, config)
        template_file = path / CHAT_TEMPLATE_FILE
        if template_file.exists():  # an older save's file would win over the config's template
            template_file.unlink()
        if self.generation_eos_ids and not (path / GENERATION_FILE).exists():
            _write_json(path / GENERATION_FILE, {"eos_token_id": list(self.generation_eos_ids)})


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{path} is not valid JSON ({e}); restore it from the checkpoint"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _token_text(value: Any) -> Any:
    """A special token as its text: older files write {"content": "<s>", "lstrip": ...}."""
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return value


def _chat_template(folder: Path, configured: Any) -> str | None:
    """The default chat template: chat_template.jinja first (transformers' newer place),
    then tokenizer_config.json's `chat_template`, a string or a list of named templates."""
    if (folder / CHAT_TEMPLATE_FILE).is_file():
        return (folder / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
    if isinstance(configured, list):
        named = {t.get("name"): t.get("template") for t in configured if isinstance(t, dict)}
        configured = named.get("default")
    return configured if isinstance(configured, str) else None
