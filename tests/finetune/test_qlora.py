"""QLoRA: `lora.base_dtype = "nf4"` holds the targeted layers' frozen weights in 4 bits
(hone.finetune.nf4, through bitsandbytes, whose torch backend runs on a CPU too).

A 4-bit layer computes what an fp32 layer whose weight is the dequantized one computes, to
the bit, forward and backward, without keeping the dequantized weight for backward; it
merges and unmerges exactly; and a run on the tiny Llama trains, saves its adapters alone,
loads back with the trained model's logits (quantizing is deterministic; training leaves
the 4 bits alone), exports to ONNX
(dense weights) and exports merged weights that transformers loads.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from hone.errors import ConfigError
from hone.finetune import nf4
from hone.finetune.frozen_base import base_reference
from hone.finetune.lora import LoRA, LoRALinear, lora_layers
from hone.pretrained.weights import load_pretrained
from tests.finetune.test_export_merge import IDS, hone_cli, hone_logits, lora_trainer

pytest.importorskip("bitsandbytes")
transformers = pytest.importorskip("transformers")


def layers(seed: int = 0) -> tuple[LoRALinear, LoRALinear]:
    """A 4-bit LoRA layer (96 x 64, bias, non-zero B), and an fp32 one with the same adapters
    whose weight is the 4-bit one dequantized."""
    torch.manual_seed(seed)
    linear = nn.Linear(64, 96)
    twin = copy.deepcopy(linear)
    quantized = LoRALinear(linear, rank=4, alpha=8.0, base_dtype="nf4")
    with torch.no_grad():
        quantized.lora_b.weight.normal_()
        twin.weight.copy_(quantized.base_weight())
    dense = LoRALinear(twin, rank=4, alpha=8.0)
    dense.load_state_dict(quantized.state_dict(), strict=False)  # all but the weight
    return quantized, dense


def test_a_4bit_layer_computes_what_its_dequantized_weight_does_to_the_bit() -> None:
    torch.manual_seed(0)
    original = nn.Linear(64, 96).weight.detach().clone()
    quantized, dense = layers()
    assert quantized.weight is None and quantized.nf4 is not None
    # 4 bits a number and an fp32 scale a block of 64: 0.5625 bytes against fp32's 4
    assert quantized.nf4.nbytes() == 96 * 64 // 2 + 96 * 64 // 64 * 4
    assert sorted(quantized.state_dict()) == ["bias", "lora_a.weight", "lora_b.weight"]
    # rounded to the nearest level: off by at most half the widest gap between NF4's levels
    # (-1 and -0.696), 0.152 of its block's largest magnitude
    error = (quantized.base_weight() - original).abs()
    assert 0 < error.max() <= 0.152 * original.abs().max() and error.mean() < 0.01

    x = torch.randn(3, 5, 64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = quantized(x), dense(x2)
    assert torch.equal(y, y2)
    y.square().sum().backward()
    y2.square().sum().backward()
    assert torch.equal(x.grad, x2.grad)
    for name in ("lora_a", "lora_b"):
        ours, theirs = getattr(quantized, name).weight.grad, getattr(dense, name).weight.grad
        assert torch.equal(ours, theirs), name


def uses(tensor: torch.Tensor) -> int:
    """The references to the memory of `tensor` (autograd's saved tensors among them)."""
    return int(torch._C._storage_Use_Count(tensor.untyped_storage()._cdata))


def test_backward_dequantizes_again_instead_of_keeping_the_weight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    quantized, _ = layers()
    made: list[torch.Tensor] = []
    dequantize = nf4.NF4Weight.dequantized

    def counted(self: nf4.NF4Weight, dtype: torch.dtype | None = None) -> torch.Tensor:
        made.append(dequantize(self, dtype))
        return made[-1]

    monkeypatch.setattr(nf4.NF4Weight, "dequantized", counted)
    x = torch.randn(2, 64, requires_grad=True)
    y = quantized(x)
    assert len(made) == 1
    # what autograd saved for backward is the recipe, not the weight it made: nothing but
    # the list refers to that weight's memory, as to a fresh tensor's
    assert uses(made.pop()) == uses(torch.randn(96, 64))
    y.sum().backward()
    assert len(made) == 1  # made again for the input's gradient
    assert x.grad is not None


def test_a_4bit_layer_merges_unmerges_and_goes_dense_exactly() -> None:
    quantized, dense = layers()
    x = torch.randn(4, 64)
    with torch.no_grad():
        before = quantized(x)
        quantized.merge()
        merged = quantized(x)
        assert quantized.weight is not None and quantized.weight.dtype == torch.float32
        dense.merge()
        assert torch.equal(quantized.weight, dense.weight)
        quantized.unmerge()
        assert quantized.weight is None  # the 4 bits, untouched, are the weight again
        assert torch.equal(quantized(x), before)
        # held dense instead (for ONNX): the same outputs, to the bit
        quantized.dequantize_base()
        assert quantized.nf4 is None and quantized.weight is not None
        assert torch.equal(quantized(x), before)
    assert (merged - before).abs().max() < 1e-5


def test_nf4_is_refused_in_one_line_without_a_pretrained_base_or_bitsandbytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError, match="set model.name = pretrained") as refused:
        LoRA(base_dtype="nf4")
    assert "\n" not in str(refused.value)
    real = nf4.importlib.util.find_spec
    monkeypatch.setattr(
        nf4.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bitsandbytes" else real(name, *a),
    )
    with pytest.raises(ConfigError, match=r"pip install 'hone-ml\[qlora\]'"):
        LoRA(base_dtype="nf4", frozen_base={"path": "x", "files": {}})


def test_a_4bit_run_trains_reloads_exactly_and_exports_merged(
    tiny_checkpoint: Callable[[str], Path], notes: Path, tmp_path: Path
) -> None:
    checkpoint = tiny_checkpoint("llama")
    trainer = lora_trainer(checkpoint, tmp_path / "run", notes, "lora.base_dtype=nf4")
    run = trainer.run_dir
    with safe_open(str(run / "model.safetensors"), framework="pt") as f:
        assert f.keys() and all(".lora_" in name for name in f.keys())  # the adapters alone
    trained = lora_layers(trainer.model)
    fresh = lora_layers(LoRA(base_dtype="nf4", targets="all-linear", frozen_base=base_reference(str(checkpoint))).convert(
        load_pretrained(checkpoint)[0]
    ))  # fmt: skip
    for name, layer in trained.items():  # training left the 4 bits as quantizing made them
        assert layer.nf4 is not None and fresh[name].nf4 is not None
        assert torch.equal(layer.nf4.packed, fresh[name].nf4.packed), name
        assert torch.equal(layer.nf4.scale_bits, fresh[name].nf4.scale_bits), name
    # rebuilt from the checkpoint and quantized again: the very bytes it trained on, and the
    # trained model's logits to the bit
    ours = hone_logits(run)
    with torch.no_grad():
        assert torch.equal(ours, trainer.model.eval()(IDS))

    # ONNX knows no NF4: the graph holds the dense weights the run computes with
    code, _, err = hone_cli("export", str(run), "--format", "onnx", "--output", str(tmp_path))
    assert code == 0, err
    assert (tmp_path / "model.onnx").is_file()

    out = tmp_path / "merged"
    code, _, err = hone_cli("export", str(run), "--format", "hf", "--merge", "--output", str(out))
    assert code == 0, err
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    base = transformers.AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        assert (base(IDS).logits - ours).abs().max() > 1e-2  # 4 bits and adapters: changed
        assert (model(IDS).logits - ours).abs().max() < 1e-5
