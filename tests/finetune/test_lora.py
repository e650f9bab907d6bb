"""LoRA (hone.finetune.lora) on tiny Hugging Face checkpoints, and adapters in PEFT's format
(hone.finetune.peft_format) both ways, against `peft` itself.

One `[lora] enabled = true` run (a module fixture: four steps from the tiny Llama on a text
file, adapter dropout on) serves the tests of training: only the adapters move and the
optimizer holds only them, resuming from its step-2 checkpoint ends with the same adapters,
and the run loads back (converters.json re-applies LoRA) with the trained logits.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import hone
from hone.config import load_config
from hone.errors import ConfigError
from hone.finetune.frozen_base import base_reference
from hone.finetune.lora import (
    LoRA,
    adapter_parameters,
    base_dtype_for,
    lora_layers,
    merge_adapters,
    unmerge_adapters,
)
from hone.finetune.peft_format import load_peft_adapter, save_peft_adapter
from hone.pretrained.weights import load_pretrained
from tests.pretrained.conftest import SENTENCES

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

IDS = torch.tensor([[0, 5, 17, 42, 99, 200, 3, 7, 250, 11]])  # (1, 10) token ids


def base(folder: Path) -> nn.Module:
    model, _, _ = load_pretrained(folder)
    return model


def logits(model: Any, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        out = model(ids)
    return out if isinstance(out, torch.Tensor) else out.logits


def randomize(lora_b: list[torch.Tensor], seed: int = 0) -> None:
    """Non-zero B (they start at zero: the adapters would change nothing)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for weight in lora_b:
            weight.copy_(torch.randn(weight.shape, generator=generator) * 0.1)


@pytest.fixture(scope="module")
def llama(tiny_checkpoint: Callable[[str], Path]) -> Path:
    return tiny_checkpoint("llama")


def test_adapters_start_neutral_and_merge_to_the_same_logits(llama: Path) -> None:
    model = base(llama)
    before = logits(model)
    LoRA(rank=4, alpha=8, targets="all-linear").convert(model)
    assert sorted({name.split(".", 2)[2] for name in lora_layers(model)}) == [
        "attn.k", "attn.proj", "attn.q", "attn.v", "mlp.down", "mlp.gate", "mlp.up",
    ]  # fmt: skip
    assert torch.equal(logits(model), before)  # B = 0
    randomize([layer.lora_b.weight for layer in lora_layers(model).values()])
    unmerged = logits(model)
    assert (unmerged - before).abs().max() > 1e-2
    weights = {n: m.weight.clone() for n, m in lora_layers(model).items()}
    merge_adapters(model)
    assert (logits(model) - unmerged).abs().max() < 1e-5
    unmerge_adapters(model)
    assert all((m.weight - weights[n]).abs().max() < 1e-6 for n, m in lora_layers(model).items())
    assert (logits(model) - unmerged).abs().max() < 1e-5


@pytest.mark.parametrize("base_dtype", ["fp32", "bf16", "nf4"])
def test_the_flops_count_frozen_weights_at_4_a_parameter(llama: Path, base_dtype: str) -> None:
    """A frozen weight has no gradient of its own to compute: 4 FLOPs a token, not 6 (MFU);
    a 4-bit base, which is not a parameter, counts as its dense weight."""
    if base_dtype == "nf4":
        pytest.importorskip("bitsandbytes")
    model = base(llama)
    full = model.flops_per_token()
    cfg = model.config
    attention = 12.0 * cfg.n_layer * cfg.n_head * cfg.head_width * cfg.block_size
    weights = (full - attention) / 6  # every weight that multiplies a token, trained
    reference = base_reference(str(llama)) if base_dtype == "nf4" else None
    LoRA(4, 8, 0.0, "all-linear", base_dtype, reference).convert(model)
    adapters = sum(p.numel() for p in adapter_parameters(model).values())
    assert model.flops_per_token() == 4 * weights + 6 * adapters + attention


def test_a_bf16_base_keeps_fp32_adapters_and_close_logits(llama: Path) -> None:
    fp32, bf16 = base(llama), base(llama)
    LoRA(rank=4, targets="attention").convert(fp32)
    LoRA(rank=4, targets="attention", base_dtype="bf16").convert(bf16)
    bf16.load_state_dict(fp32.state_dict())  # the same adapters (the base rounded to bf16)
    randomize([layer.lora_b.weight for layer in lora_layers(fp32).values()])
    randomize([layer.lora_b.weight for layer in lora_layers(bf16).values()])
    layer = bf16.get_submodule("blocks.0.attn.q")
    assert layer.weight.dtype == torch.bfloat16 and layer.lora_a.weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in adapter_parameters(bf16).values())
    out = logits(bf16)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, logits(fp32), rtol=0, atol=0.05)


def test_under_autocast_a_bf16_base_computes_what_autocast_makes_of_an_fp32_one(
    llama: Path,
) -> None:
    """Autocast rounds an fp32 base to bf16 for each matmul: a base held in bf16 gives those
    very numbers (cast straight to the compute dtype, no detour through fp32 copies), the
    same loss and adapter gradients to the bit."""
    ids = torch.randint(0, 200, (2, 12), generator=torch.Generator().manual_seed(1))
    results = []
    for base_dtype in ("fp32", "bf16"):
        model = base(llama)
        with torch.no_grad():  # bf16 numbers in fp32: both bases hold the same values
            for module in model.modules():
                if isinstance(module, nn.Linear):
                    module.weight.copy_(module.weight.bfloat16().float())
        LoRA(rank=4, targets="all-linear", base_dtype=base_dtype).convert(model)
        torch.manual_seed(0)
        for layer in lora_layers(model).values():
            layer.reset_adapters()
        randomize([layer.lora_b.weight for layer in lora_layers(model).values()])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model.train()(ids[:, :-1], targets=ids[:, 1:])
        loss.backward()
        grads = {n: p.grad for n, p in adapter_parameters(model).items()}
        results.append((loss, grads))
    (loss32, grads32), (loss16, grads16) = results
    assert torch.equal(loss32, loss16)
    assert grads32.keys() == grads16.keys()
    assert all(torch.equal(grads32[n], grads16[n]) for n in grads32)
    assert any(g.abs().max() > 0 for g in grads16.values())


class _FloatCopies(TorchDispatchMode):
    """The shapes of the fp32 tensors that casts make."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten._to_copy.default and out.dtype == torch.float32:
            self.shapes.append(tuple(out.shape))
        return out


def test_under_autocast_a_bf16_base_is_never_copied_to_fp32(
    tiny_checkpoint: Callable[[str], Path],
) -> None:
    """A GPT's layers get fp32 inputs under autocast: the bf16 base goes to the matmul as it
    is, not through an fp32 copy of itself (which autocast then cast back)."""
    model = base(tiny_checkpoint("gpt2"))
    LoRA(rank=2, targets="all-linear", base_dtype="bf16").convert(model)
    weights = {tuple(layer.weight.shape) for layer in lora_layers(model).values()}
    copies = _FloatCopies()
    with torch.autocast("cpu", dtype=torch.bfloat16), copies:
        model.train()(IDS).float().sum().backward()
    assert not weights & set(copies.shapes), copies.shapes
    assert all(p.grad is not None for p in adapter_parameters(model).values())


def file_rss(path: Path) -> int:
    """Bytes of `path`'s mappings resident in this process (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = len(fields) >= 6 and fields[5] == str(path.resolve())
        elif inside and fields[0] == "Rss:":
            total += int(fields[1]) * 1024
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="Linux's /proc")
def test_a_base_cast_to_bf16_gives_back_its_mapped_pages(llama: Path) -> None:
    """The checkpoint's mapping stays open (the embedding lives on it), but the pages of the
    weights cast to bf16 leave RSS; the tensors still on the mapping read as before."""
    weights = llama / "model.safetensors"
    with weights.open("rb") as f:  # the kernel reclaims clean pages only: written back first
        os.fsync(f.fileno())
    model = base(llama)
    linears = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    linears = [w for w in linears if w is not model.token_embedding.weight]
    cast_bytes = sum(w.numel() * w.element_size() for w in linears)
    before = logits(model)  # reads every weight: all its pages resident
    resident = file_rss(weights)
    assert resident >= cast_bytes
    LoRA(rank=4, targets="all-linear", base_dtype="bf16").convert(model)
    assert file_rss(weights) <= resident - cast_bytes // 2
    embedding = base(llama).token_embedding.weight
    assert torch.equal(model.token_embedding.weight, embedding)
    torch.testing.assert_close(logits(model), before, rtol=0, atol=0.05)


def test_an_auto_base_dtype_follows_the_runs_precision(llama: Path) -> None:
    """bf16 under bf16 autocast (autocast casts the weights to bf16 anyway), fp32 otherwise;
    the converter records the resolved dtype, so the run reloads as it trained."""
    assert [base_dtype_for("auto", p) for p in ("bf16", "fp32", "fp16")] == [
        "bf16",
        "fp32",
        "fp32",
    ]
    assert base_dtype_for("bf16", "fp32") == "bf16"  # chosen outright: kept
    cfg = load_config(None, ["lora.enabled=true", "train.max_steps=1"])
    assert cfg.lora.base_dtype == "auto"
    converter = LoRA.from_config(cfg.lora, "bf16")
    model = converter.convert(base(llama))
    assert converter.record()["base_dtype"] == "bf16"
    assert model.get_submodule("blocks.0.attn.q").weight.dtype == torch.bfloat16


def test_gpt_gets_adapters_on_its_fused_qkv_and_peft_format_refuses_it(
    tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    model = base(tiny_checkpoint("gpt2"))
    converter = LoRA(rank=2, targets="attention")
    converter.convert(model)
    assert converter.record()["targets"] == ["attn.qkv", "attn.proj"]
    assert len(lora_layers(model)) == 4  # two blocks
    with pytest.raises(ConfigError, match="Llama family"):
        save_peft_adapter(model, tmp_path)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["lora.rank=0"], "lora.rank must be at least 1, got 0; set --lora.rank"),
        (["lora.targets=attn.q;v"], "lora.targets must be attention, all-linear or module-name"),
        (
            ["lora.base_dtype=fp16"],
            "lora.base_dtype must be one of auto, fp32, bf16, nf4, got 'fp16'",
        ),
    ],
)
def test_the_config_refuses_bad_values_in_one_line(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as refused:
        load_config("pretrained-text", overrides)
    assert "\n" not in str(refused.value)


def test_a_target_the_model_lacks_is_refused_in_one_line(llama: Path) -> None:
    with pytest.raises(ConfigError, match=r"'attn\.qkv' matches no linear layer") as refused:
        LoRA(targets="attn.q,attn.qkv").convert(base(llama))
    assert "attn.q, attn.v, " in str(refused.value) and "\n" not in str(refused.value)


def test_a_hone_adapter_loads_in_peft_with_the_same_logits(llama: Path, tmp_path: Path) -> None:
    model = base(llama)
    LoRA(rank=4, alpha=12, targets="attn.q,attn.v,mlp.down").convert(model)
    randomize([layer.lora_b.weight for layer in lora_layers(model).values()])
    save_peft_adapter(model, tmp_path / "adapter", base_model=str(llama))
    hf = transformers.AutoModelForCausalLM.from_pretrained(llama, dtype=torch.float32)
    theirs = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    assert sorted(theirs.peft_config["default"].target_modules) == ["down_proj", "q_proj", "v_proj"]
    assert (logits(theirs) - logits(model)).abs().max() < 1e-5


def test_a_peft_adapter_loads_in_hone_with_the_same_logits(
    tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    folder = tiny_checkpoint("qwen2")  # q/k/v biases, grouped-query attention, a tied head
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    config = peft.LoraConfig(
        r=4, lora_alpha=8, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"],
    )  # fmt: skip
    theirs = peft.get_peft_model(hf, config).eval()
    randomize([p for n, p in theirs.named_parameters() if "lora_B" in n], seed=1)
    theirs.save_pretrained(tmp_path / "adapter")
    model = base(folder)
    converter = load_peft_adapter(model, tmp_path / "adapter")
    assert converter.record() == {
        "name": "lora", "rank": 4, "alpha": 8.0, "dropout": 0.0, "base_dtype": "fp32",
        "targets": ["attn.k", "attn.proj", "attn.q", "attn.v", "mlp.gate"],
    }  # fmt: skip
    assert (logits(model) - logits(theirs)).abs().max() < 1e-5


# ----------------------------------------------------------------- a LoRA run
@pytest.fixture(scope="module")
def lora_overrides(llama: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """`hone train pretrained-text` from the tiny Llama with `[lora] enabled = true`: four
    steps on a text file, adapter dropout on, a checkpoint every two."""
    notes = tmp_path_factory.mktemp("text") / "notes.txt"
    notes.write_text("\n".join(SENTENCES * 3) + "\n", encoding="utf-8")
    return [
        f"model.path={llama}", f"data.path={notes}", "model.block_size=32",
        "lora.enabled=true", "lora.rank=4", "lora.dropout=0.1", "optim.lr=1e-2",
        "schedule.warmup_steps=0", "train.max_steps=4", "train.checkpoint_every=2",
        "train.batch_size=4", "train.eval_every=0", "train.eval_batches=2",
        "train.sample_tokens=0", "train.precision=fp32", "train.threads=1",
        "log.tensorboard=false", "log.progress=off", "log.stats_every=0",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(lora_overrides: list[str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The finished trainer of that run."""
    run_dir = tmp_path_factory.mktemp("lora") / "run"
    trainer = hone.Trainer(config="pretrained-text", overrides=lora_overrides, run_dir=run_dir)
    trainer.fit()
    return trainer


def test_training_moves_only_the_adapters(trained: Any, llama: Path) -> None:
    adapters = adapter_parameters(trained.model)
    held = {id(p) for group in trained.optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in adapters.values()} and len(adapters) == 2 * 4 * 2
    start = base(llama).state_dict()
    for name, tensor in trained.model.state_dict().items():
        if "lora_" not in name:
            assert torch.equal(tensor, start[name]), name  # bit-identical: frozen
    assert all(adapters[n].abs().max() > 0 for n in adapters if "lora_b" in n)  # moved off zero


def test_the_runs_flops_count_its_32_token_windows_not_the_checkpoints_context(
    trained: Any,
) -> None:
    """MFU's attention term: the checkpoint's context is 128 tokens, the run trains 32."""
    assert trained.model.config.block_size == 128
    meter = trained.throughput.flops_per_token
    assert meter == trained.model.flops_per_token(32) < trained.model.flops_per_token()


def test_a_lora_run_reloads_with_its_adapters(trained: Any) -> None:
    records = (trained.run_dir / "converters.json").read_text()
    assert '"name": "lora"' in records and '"attn.proj"' in records
    loaded = hone.load_run(trained.run_dir, device="cpu")
    assert sorted(lora_layers(loaded.model)) == sorted(lora_layers(trained.model))
    assert (logits(loaded.model) - logits(trained.model.eval())).abs().max() < 1e-5


def test_resuming_a_lora_run_ends_with_the_same_adapters(
    trained: Any, lora_overrides: list[str], tmp_path: Path
) -> None:
    """The checkpoints hold the adapters and their optimizer state (the frozen base is
    rebuilt from the checkpoint the run names): the run resumed from step 2 retraces steps 3
    and 4 exactly, dropout included."""
    copy = tmp_path / "run"
    shutil.copytree(trained.run_dir, copy)
    resumed = hone.Trainer(
        config="pretrained-text",
        overrides=lora_overrides,
        run_dir=copy,
        resume=copy / "checkpoints" / "step-0000002",
    )
    resumed.fit()
    ours, theirs = adapter_parameters(resumed.model), adapter_parameters(trained.model)
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)
