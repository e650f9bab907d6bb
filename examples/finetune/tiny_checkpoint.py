"""Write a tiny random chat checkpoint: try the fine-tuning commands without a download.

    python examples/finetune/tiny_checkpoint.py tiny-chat
    hone train smollm2-135m-lora --model.path=tiny-chat --model.block_size=128 --run-dir runs/tiny

A Llama two blocks 128 wide, random weights, saved by transformers as any checkpoint is
(config.json, model.safetensors), with a byte-level tokenizer (a token per byte, no merges)
and ChatML's chat template, as SmolLM2's and Qwen's instruct checkpoints write it: its
`<|im_start|>` and `<|im_end|>` markers are tokens 256 and 257, and `<|im_end|>` ends a turn.
It knows nothing: a fine-tuning run from it starts from zero (tests/finetune/test_learning.py
checks that LoRA teaches it the example task). Needs transformers (pip install transformers).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MARKERS = ["<|im_start|>", "<|im_end|>"]
# Two blocks 128 wide. LoRA on frozen random weights learns only what their random features
# let it: measured on the example task (LoRA rank 16 on every linear layer, 150 steps), 64
# wide with weights of std 0.3 had not learned to copy a word after 600 steps, 128 wide with
# these weights had (tests/finetune/test_learning.py). Linear layers of std 0.1 (transformers'
# init is 0.02), embeddings (tied with the head) of std 0.3: their outputs tell characters
# apart; a rope_theta whose frequencies all turn within the 128-token context.
LLAMA: dict[str, Any] = {
    "vocab_size": 264,  # 256 bytes and the two markers, padded to a multiple of 8
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 128,
    "rope_theta": 100.0,
    "initializer_range": 0.1,
    "tie_word_embeddings": True,
}
EMBEDDING_STD = 0.3


def write_tokenizer(folder: Path) -> None:
    """tokenizer.json (byte-level, the markers as special tokens) and tokenizer_config.json
    (the end of turn as EOS and padding, the template)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(MARKERS)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"eos_token": MARKERS[1], "pad_token": MARKERS[1], "chat_template": CHATML}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def write_checkpoint(folder: str | Path, seed: int = 0, **changes: Any) -> Path:
    """The tiny chat checkpoint in `folder` (LLAMA's shape, with `changes`); returns it."""
    import torch
    import transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = transformers.LlamaConfig(bos_token_id=None, eos_token_id=257, **{**LLAMA, **changes})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, EMBEDDING_STD)
    model.save_pretrained(folder)
    write_tokenizer(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="where to write it")
    parser.add_argument("--seed", type=int, default=0, help="of the random weights")
    args = parser.parse_args()
    print(f"wrote a tiny random chat checkpoint to {write_checkpoint(args.folder, args.seed)}")


if __name__ == "__main__":
    main()
