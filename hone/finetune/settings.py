"""The `[lora]` table: LoRA adapters trained on a frozen model (hone.finetune.lora).

Registered with hone.config by name, so the config tree holds it as `cfg.lora` while
hone.finetune owns it; this module imports nothing but the config helpers (no torch).

    [lora]
    enabled = true
    rank = 8
    alpha = 16
    targets = "attention"      # or "all-linear", or module-name suffixes: "attn.q,attn.v"
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hone.config.components import register_section
from hone.config.fields import opt
from hone.errors import ConfigError

# Target presets -> suffixes of hone's module names, of every family that has them: the Llama
# family's separate q/k/v (hone.models.llama), the GPT's fused qkv (hone.models.gpt). Never
# the LM head nor the embeddings: the adapters change what the blocks compute.
PRESETS: dict[str, tuple[str, ...]] = {
    "attention": ("attn.q", "attn.k", "attn.v", "attn.qkv", "attn.proj"),
    "all-linear": (
        "attn.q", "attn.k", "attn.v", "attn.qkv", "attn.proj",
        "mlp.gate", "mlp.up", "mlp.down", "mlp.fc", "mlp.proj",
    ),
}  # fmt: skip
BASE_DTYPES = ("auto", "fp32", "bf16", "nf4")
_MODULE_NAME = re.compile(r"\w+(\.\w+)*")  # nn.Sequential's children are 0, 1, ...


def base_dtype_for(base_dtype: str, precision: str) -> str:
    """`[lora] base_dtype` for a run computing in `precision` (train.precision resolved):
    "auto" is bf16 under bf16 autocast, fp32 otherwise; any other value is itself."""
    if base_dtype != "auto":
        return base_dtype
    return "bf16" if precision == "bf16" else "fp32"


def target_suffixes(targets: str | list[str]) -> list[str]:
    """The module-name suffixes that `targets` (a preset, comma-separated suffixes, or a
    list of them) names; a malformed one is refused in one line."""
    items = targets.split(",") if isinstance(targets, str) else list(targets)
    suffixes: list[str] = []
    for item in (item.strip() for item in items):
        names = PRESETS.get(item, (item,))
        for name in names:
            if not _MODULE_NAME.fullmatch(name):
                raise ConfigError(
                    f"lora.targets must be {', '.join(PRESETS)} or module-name suffixes such as "
                    f"attn.q,attn.v, got {item!r}; set --lora.targets=attention"
                )
            if name not in suffixes:
                suffixes.append(name)
    if not suffixes:
        raise ConfigError("lora.targets names no module; set --lora.targets=attention")
    return suffixes


@register_section("lora")
@dataclass
class LoRAConfig:
    """LoRA (Hu et al. 2021): every weight of the model frozen, and a trainable low-rank
    update B A (scaled by alpha / rank) added to each targeted linear layer."""

    enabled: bool = opt(False, "train LoRA adapters on the frozen model instead of every weight")
    rank: int = opt(8, "rank r of each adapter: A is (r x in), B (out x r)", ge=1)
    alpha: float = opt(16.0, "the adapters' output is scaled by alpha / rank", gt=0)
    dropout: float = opt(0.0, "dropout on the adapters' input while training", ge=0, lt=1)
    targets: str = opt(
        "attention",
        "the linear layers that get adapters: attention (q, k, v, output projections), "
        "all-linear (also the MLP; never the LM head or embeddings), or comma-separated "
        "module-name suffixes (attn.q,attn.v)",
    )
    base_dtype: str = opt(
        "auto",
        "dtype the frozen base weights are held in: bf16 halves their memory, each forward "
        "casts them to the input's dtype; auto is bf16 where the run computes in bf16 "
        "(train.precision, autocast casts them anyway), else fp32; nf4 (QLoRA's 4 bits, "
        "needs bitsandbytes: hone-ml[qlora]) holds the targeted layers of a pretrained "
        "checkpoint in 0.56 bytes a number, dequantized as each forward and backward uses them",
        choices=list(BASE_DTYPES),
    )

    def validate(self) -> None:
        target_suffixes(self.targets)
