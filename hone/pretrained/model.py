"""`[model] name = "pretrained"`: a Hugging Face checkpoint as the model a run starts from.

    [model]
    name = "pretrained"
    path = "hf:HuggingFaceTB/SmolLM2-135M"   # or a folder with config.json + *.safetensors
    dtype = "auto"                           # the checkpoint's; or fp32, bf16
    block_size = 256                         # training windows; 0: the checkpoint's context

`hone train` then continues training the checkpoint (every weight: full fine-tuning) on the
config's data, read with the checkpoint's own tokenizer: `complete` points the data's
`tokenizer_path` at the checkpoint (unless the config names one) and takes the context length
from it. The builder loads the weights through `hone.pretrained.weights.load_pretrained`
into hone's own model code (the Llama family or the GPT).

A run trained so records `name = "pretrained"` with its `path`; loading the run again rebuilds
the architecture from the checkpoint's config.json (the weights are the run's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hone.config import ModelConfig, opt, register_model_config
from hone.errors import ConfigError
from hone.models.base import MODELS, ModelSpec
from hone.pretrained.source import CONFIG_FILE, is_hub_id, resolve_checkpoint

if TYPE_CHECKING:
    from torch import nn

    from hone.config import Config

# model.dtype -> the torch dtype's name; "auto" keeps the checkpoint's
DTYPES = {"auto": None, "fp32": "float32", "bf16": "bfloat16"}


@register_model_config("pretrained")
@dataclass
class PretrainedConfig:
    """`model.*` keys of a pretrained checkpoint."""

    path: str = opt(
        "",
        "the checkpoint: a folder with config.json and *.safetensors, or hf:ORG/NAME[@REVISION] "
        "from the Hugging Face Hub (downloaded into its cache; pip install 'hone-ml[hf]')",
    )
    dtype: str = opt(
        "auto",
        "dtype of the weights: auto (the checkpoint's), fp32 or bf16",
        choices=list(DTYPES),
    )
    block_size: int = opt(
        0, "tokens per training window; 0: the checkpoint's context length (the most)", ge=0
    )

    @property
    def context_length(self) -> int:
        return self.block_size

    def validate(self) -> None:
        if not self.path:
            raise ConfigError(
                "model.name = 'pretrained' needs a checkpoint; set --model.path=hf:ORG/NAME "
                "(e.g. hf:HuggingFaceTB/SmolLM2-135M) or --model.path=FOLDER"
            )

    def complete(self, cfg: Config) -> None:
        """Fill in what the checkpoint decides, before the data is read: the context length
        (when block_size = 0), and the checkpoint's tokenizer for data read as text."""
        from hone.pretrained.architectures import hone_arch

        folder = resolve_checkpoint(self.path)
        if not is_hub_id(self.path):  # recorded absolute: the run loads from anywhere
            folder = folder.resolve()
            self.path = str(folder)
        _, arch = hone_arch(json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")))
        longest = arch.context_length
        if self.block_size > longest:
            raise ConfigError(
                f"model.block_size must be at most the checkpoint's context ({longest} tokens), "
                f"got {self.block_size}; set --model.block_size={longest} or less"
            )
        self.block_size = self.block_size or longest
        # Data sets that read a tokenizer (text, shakespeare, tokens; chat, whose records the
        # checkpoint's chat template writes) get the checkpoint's: the model knows no other
        # ids. One the user named is kept.
        data: Any = cfg.data
        if hasattr(data, "tokenizer_path") and not data.tokenizer_path:
            data.tokenizer_path = str(folder)
            if hasattr(data, "tokenizer"):
                data.tokenizer = "pretrained"


@MODELS.register("pretrained")
def build(cfg: ModelConfig, spec: ModelSpec) -> nn.Module:
    """The checkpoint's model with its weights (in `model.dtype`), on the CPU."""
    import torch

    from hone.pretrained.weights import load_pretrained

    name = DTYPES[cfg.dtype]
    dtype = getattr(torch, name) if name else None
    model, _, arch = load_pretrained(resolve_checkpoint(cfg.path), dtype=dtype, device="cpu")
    if spec.vocab_size > arch.vocab_size:
        raise ConfigError(
            f"the data has {spec.vocab_size} token ids, the checkpoint embeds {arch.vocab_size}; "
            "read the data with the checkpoint's tokenizer (leave data.tokenizer_path unset)"
        )
    if spec.input_shape[0] > arch.block_size:
        raise ConfigError(
            f"model.block_size must be at most the checkpoint's context ({arch.block_size} "
            f"tokens), got {spec.input_shape[0]}; set --model.block_size={arch.block_size}"
        )
    return model.train()
