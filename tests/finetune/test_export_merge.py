"""`hone export` of LoRA runs: `--format hf --merge` writes the base with the adapters folded
in, which transformers loads with hone's logits; `--format peft` writes the adapters alone,
which PEFT loads on the base with the same logits; `--format hf` without --merge is refused
in one line naming both.

Each run trains a few steps from a tiny checkpoint of tests/pretrained (fp32, a large rate:
the adapters move well off zero); the CLI's `main` runs in this process.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import hone
from hone.cli import main
from hone.finetune.lora import lora_layers

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

IDS = torch.tensor([[0, 5, 17, 42, 99, 200, 3, 7, 250, 11]])  # (1, 10) token ids


def hone_cli(*argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `hone ARGV`, run by the CLI's main in this process."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def train_lora(base: Path, run_dir: Path, text: Path, *extra: str) -> Path:
    return lora_trainer(base, run_dir, text, *extra).run_dir


def lora_trainer(base: Path, run_dir: Path, text: Path, *extra: str) -> hone.Trainer:
    """The finished trainer of a LoRA run of three steps from `base` on `text`."""
    overrides = [
        f"model.path={base}", f"data.path={text}", "model.block_size=32",
        "lora.enabled=true", "lora.rank=4", "lora.alpha=8", "lora.targets=all-linear",
        "optim.lr=3e-2", "schedule.warmup_steps=0", "train.max_steps=3", "train.batch_size=4",
        "train.eval_every=0", "train.eval_batches=1", "train.sample_tokens=0",
        "train.precision=fp32", "train.threads=1", "log.tensorboard=false", "log.progress=off",
        "log.stats_every=0", *extra,
    ]  # fmt: skip
    trainer = hone.Trainer(config="pretrained-text", overrides=overrides, run_dir=run_dir)
    trainer.fit()
    return trainer


def hone_logits(run: Path) -> torch.Tensor:
    loaded = hone.load_run(run, device="cpu")
    assert lora_layers(loaded.model)  # unmerged: the adapters run beside the base
    with torch.no_grad():
        return loaded.model(IDS)


@pytest.fixture(scope="module")
def llama_run(
    tiny_checkpoint: Callable[[str], Path], notes: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A LoRA run on the tiny Qwen2 (q/k/v biases, a tied head), every linear layer."""
    return train_lora(tiny_checkpoint("qwen2"), tmp_path_factory.mktemp("lora") / "run", notes)


def test_hf_without_merge_is_refused_in_one_line(llama_run: Path, tmp_path: Path) -> None:
    code, out, err = hone_cli("export", str(llama_run), "--format", "hf", "--output", str(tmp_path))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--merge" in err and "--format peft" in err


def test_merged_export_loads_in_transformers_with_the_unmerged_logits(
    llama_run: Path, tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    out = tmp_path / "merged"
    code, _, err = hone_cli(
        "export", str(llama_run), "--format", "hf", "--merge", "--output", str(out)
    )
    assert code == 0, err
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        names = list(f.keys())
        assert all(f.get_tensor(n).dtype == torch.float32 for n in names)  # the base's dtype
    assert not [n for n in names if "lora" in n]
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_checkpoint("qwen2")).eval()
    ours = hone_logits(llama_run)
    with torch.no_grad():
        assert (base(IDS).logits - ours).abs().max() > 1e-2  # the adapters changed something
        assert (model(IDS).logits - ours).abs().max() < 1e-5


def test_peft_export_loads_on_the_base_with_the_same_logits(
    llama_run: Path, tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    out = tmp_path / "adapter"
    code, _, err = hone_cli("export", str(llama_run), "--format", "peft", "--output", str(out))
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_checkpoint("qwen2"))
    base = transformers.AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"])
    theirs = peft.PeftModel.from_pretrained(base, out).eval()
    with torch.no_grad():
        assert (theirs(IDS).logits - hone_logits(llama_run)).abs().max() < 1e-5


def test_peft_export_of_a_run_without_adapters_is_refused(
    tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    code, _, err = hone_cli(
        "export", str(tiny_checkpoint("llama")), "--format", "peft", "--output", str(tmp_path / "a")
    )
    assert code == 2 and err.count("\n") == 1 and "--format hf" in err


def test_a_gpt2_run_merges_through_its_transposed_layers(
    tiny_checkpoint: Callable[[str], Path], notes: Path, tmp_path: Path
) -> None:
    """GPT-2 stores its fused qkv and MLP weights transposed (Conv1D): the merged weights
    go out transposed as the base's do."""
    run = train_lora(tiny_checkpoint("gpt2"), tmp_path / "run", notes)
    code, _, err = hone_cli(
        "export", str(run), "--format", "hf", "--merge", "--output", str(tmp_path / "hf")
    )
    assert code == 0, err
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        assert (model(IDS).logits - hone_logits(run)).abs().max() < 1e-5


def test_a_bf16_base_merges_into_bf16_weights(
    tiny_checkpoint: Callable[[str], Path], notes: Path, tmp_path: Path
) -> None:
    """model.dtype = bf16: the merged checkpoint is bf16, as the base the run held."""
    run = train_lora(tiny_checkpoint("llama"), tmp_path / "run", notes, "model.dtype=bf16")
    code, _, err = hone_cli(
        "export", str(run), "--format", "hf", "--merge", "--output", str(tmp_path / "hf")
    )
    assert code == 0, err
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    with torch.no_grad():
        theirs = model.eval()(IDS).logits
    torch.testing.assert_close(theirs, hone_logits(run).float(), rtol=0, atol=0.05)


def test_a_bundle_of_a_lora_run_loads_its_base_and_adapters(
    llama_run: Path, tmp_path: Path
) -> None:
    """The bundle holds the adapters alone, as the run does, and the base's reference."""
    code, _, err = hone_cli(
        "export", str(llama_run), "--format", "safetensors", "--output", str(tmp_path / "b")
    )
    assert code == 0, err
    assert (tmp_path / "b/model.safetensors").stat().st_size < 100_000
    torch.testing.assert_close(hone_logits(tmp_path / "b"), hone_logits(llama_run), rtol=0, atol=0)
