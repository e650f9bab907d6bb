"""Generate text from a finished language-model run with the tokenizer it was trained with."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from hone.data.text.tokenizers import load_tokenizer
from hone.engine.inference import _run_path, load_run_model, run_config
from hone.engine.runtime import resolve_device
from hone.errors import ConfigError
from hone.models import ModelSpec
from hone.models.generate import generate


def sample_run(
    run: str | Path,
    prompt: str,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    device: str = "auto",
) -> str:
    """The prompt followed by `max_new_tokens` sampled tokens; reproducible given `seed`."""
    path = _run_path(run)
    info = json.loads((path / "data.json").read_text())
    if info["task"] != "lm":
        raise ConfigError(
            f"{run} is not a language model; use `hone predict` or `hone eval` for it"
        )
    cfg = run_config(path)
    dev = resolve_device(device)
    tokenizer = load_tokenizer(str(path / "tokenizer"))
    vocab = info["vocab_size"]
    model = load_run_model(
        path, ModelSpec("lm", (cfg.model.block_size,), vocab, vocab_size=vocab), cfg, dev
    )
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ConfigError("--prompt encodes to no tokens; give at least one character")
    g = torch.Generator(device=dev)
    g.manual_seed(seed)
    idx = torch.tensor([ids], dtype=torch.long, device=dev)
    out = generate(model, idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=g)
    return prompt + tokenizer.decode(out[0, len(ids) :].tolist())
