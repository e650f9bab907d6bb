"""hone.pretrained.weights' own safetensors reading and writing, against the safetensors
library's, and loading a run on the meta device (hone.engine.backends.load_on_meta)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from hone.engine import backends
from hone.pretrained.weights import read_safetensors, write_safetensors


def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "w": torch.randn(3, 5, generator=g),
        "half": torch.randn(4, generator=g).to(torch.bfloat16),
        "ids": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "transposed": torch.randn(2, 3, generator=g).t(),  # written contiguous
        "mask": torch.tensor([True, False, True]),
    }


def test_what_hone_writes_safetensors_reads(tmp_path: Path) -> None:
    write_safetensors(tensors(), tmp_path / "a.safetensors", metadata={"format": "pt"})
    loaded = load_file(str(tmp_path / "a.safetensors"))
    assert loaded.keys() == tensors().keys()
    for name, tensor in tensors().items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name


@pytest.mark.parametrize("mapped", [True, False])
def test_what_safetensors_writes_hone_reads(tmp_path: Path, mapped: bool) -> None:
    save_file({k: v.contiguous() for k, v in tensors().items()}, str(tmp_path / "b.safetensors"))
    loaded = read_safetensors(tmp_path / "b.safetensors", mapped=mapped)
    assert loaded.keys() == tensors().keys()
    for name, tensor in tensors().items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name


@pytest.mark.parametrize("name", ["qwen2", "llama"])  # a tied head, and an untied one
def test_a_checkpoint_loads_as_a_run_on_the_meta_device(
    name: str, tiny_checkpoint: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LoadedRun builds the view's model with no memory and gives it the view's weights
    (mapped): the same logits as load_pretrained, the head still tied, nothing copied."""
    from hone.engine.inference import LoadedRun
    from hone.pretrained.weights import load_pretrained

    monkeypatch.setenv("HONE_CACHE_DIR", str(tmp_path))
    folder = tiny_checkpoint(name)
    built: list[torch.device] = []
    original = backends.build_model

    def spy(*args: Any) -> Any:
        model = original(*args)
        built.append(next(model.parameters()).device)
        return model

    monkeypatch.setattr(backends, "build_model", spy)
    run = LoadedRun.load(folder, "cpu")
    assert built == [torch.device("meta")]
    reference, _, _ = load_pretrained(folder)
    idx = torch.arange(12)[None] % 300
    with torch.no_grad():
        assert torch.equal(run.model(idx), reference(idx))
    model = run.model
    assert (model.lm_head.weight is model.token_embedding.weight) == (name == "qwen2")
