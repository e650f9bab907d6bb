"""Each model family's own config: its fields build the model, its rules name the flag."""

from __future__ import annotations

import pytest
import torch

from hone.config import ModelConfig
from hone.errors import ConfigError
from hone.models import MODELS, ModelSpec, build_model
from hone.models.classic import CNNConfig, MLPConfig
from hone.models.custom import CustomConfig
from hone.models.gpt import GPTConfig


def test_each_family_owns_its_config() -> None:
    assert isinstance(ModelConfig(name="mlp").arch, MLPConfig)
    assert isinstance(ModelConfig(name="cnn").arch, CNNConfig)
    assert isinstance(ModelConfig(name="gpt").arch, GPTConfig)
    assert isinstance(ModelConfig(name="custom").arch, CustomConfig)
    assert not vars(ModelConfig(name="linear").arch)  # linear and logistic have no fields


def test_the_builders_read_their_family_config() -> None:
    spec = ModelSpec("classification", (1, 8, 8), 10)
    mlp = build_model(ModelConfig(name="mlp", depth=3, width=7), spec)
    assert [m.out_features for m in mlp if isinstance(m, torch.nn.Linear)] == [7, 7, 7, 10]
    cnn = build_model(ModelConfig(name="cnn", channels=[4], kernel_size=5), spec)
    conv = next(m for m in cnn.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.out_channels == 4 and conv.kernel_size == (5, 5)
    assert cnn(torch.zeros(2, 64)).shape == (2, 10)


def test_gpt_rules_name_the_flag() -> None:
    with pytest.raises(ConfigError, match="set --model.n_head to a divisor of 10"):
        GPTConfig(n_embd=10, n_head=4).validate()
    cfg = ModelConfig(name="gpt", n_layer=1, n_head=2, n_embd=8, block_size=6, vocab_size=3)
    with pytest.raises(ConfigError, match=r"model.vocab_size must be at least 5 .* got 3"):
        MODELS.get("gpt")(cfg, ModelSpec("lm", (6,), 5, vocab_size=5))


def test_gpt_reports_its_context_length_and_flops() -> None:
    cfg = ModelConfig(name="gpt", n_layer=1, n_head=2, n_embd=8, block_size=6)
    model = build_model(cfg, ModelSpec("lm", (6,), 5, vocab_size=5))
    assert model.context_length == 6 == cfg.context_length
    # 6 N + 12 L C T, N without the position table (tied head: the token table is the head)
    n = sum(p.numel() for p in model.parameters()) - 6 * 8
    assert model.flops_per_token() == 6 * n + 12 * 1 * 8 * 6


def test_custom_family_keys(tmp_path, monkeypatch) -> None:
    (tmp_path / "user_models.py").write_text(
        "import torch\ndef build(hidden, spec):\n"
        "    return torch.nn.Linear(spec.input_shape[0], hidden)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = ModelConfig(
        name="custom", target="user_models:build", kwargs={"hidden": 3}, context_length=16
    )
    assert cfg.context_length == 16
    model = build_model(cfg, ModelSpec("regression", (4,), 3))
    assert model.out_features == 3
    with pytest.raises(ConfigError, match="needs --model.target=package.module:factory"):
        CustomConfig(target="user_models.build").validate()
    assert ModelConfig(name="mlp").context_length == 0
