"""`hone compress --prune`: structured pruning that shrinks the matrices (and reloads through
its converter), unstructured sparsity that survives fine-tuning, iterative rounds, a pruned
GPT that samples, one-line errors for bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from hone.cli import main
from hone.compress import Prune, compress
from hone.compress.prune import prunable_weights, split_steps
from hone.compress.structured import check_structured, heads_to_remove
from hone.config import load_config
from hone.data import build_data
from hone.engine import Trainer
from hone.engine.inference import LoadedRun
from hone.errors import ConfigError, GateFailed
from hone.models import ModelSpec, build_model, num_parameters
from hone.models.converters import (
    MagnitudePrune,
    PrunedShapes,
    apply_converters,
    size_attributes,
    tensor_shapes,
)
from hone.run_files import COMPRESS, CONFIG, CONVERTERS, DATA_INFO, METRICS, MODEL, SUMMARY
from tests.compress.conftest import QUIET, TINY_GPT, one_thread_in_tmp

MLP = ["train.max_steps=150", "train.max_epochs=0", *QUIET]
GPT = [*TINY_GPT, "train.max_steps=40"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny mlp-digits and char-GPT run, and their pruned copies: the mlp's structured one
    by the command line, the rest by the library."""
    root = tmp_path_factory.mktemp("runs")
    with one_thread_in_tmp(tmp_path_factory):
        Trainer(config=load_config("mlp-digits", MLP), run_dir=root / "mlp").fit()
        Trainer(config=load_config("gpt-shakespeare-char", GPT), run_dir=root / "gpt").fit()
        args = ["compress", str(root / "mlp"), "--prune", "0.5", "--structured"]
        assert main([*args, "--finetune-steps", "150", "--repeats", "3"]) == 0
        # These check the mechanics; accuracy is the command line's run's test.
        sparse = Prune(0.5, finetune_steps=40)
        compress(root / "mlp", sparse, root / "sparse", max_drop=100, repeats=2)
        rounds = Prune(0.5, structured=True, finetune_steps=20, iterations=2)
        compress(root / "mlp", rounds, root / "rounds", max_drop=100, repeats=2)
        compress(
            root / "gpt",
            Prune(0.5, structured=True, finetune_steps=10),
            root / "gpt-pruned",
            max_drop=100,  # 40 steps of training: any loss is noise
            repeats=2,
        )
    return {
        "mlp": root / "mlp",
        "structured": root / "mlp-pruned-structured",
        "sparse": root / "sparse",
        "rounds": root / "rounds",
        "gpt": root / "gpt",
        "gpt-pruned": root / "gpt-pruned",
    }


def _table(run: Path) -> dict:
    return json.loads((run / COMPRESS).read_text())


def _linears(run: Path) -> list[tuple[int, int]]:
    model = LoadedRun.load(run, "cpu").model
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]


def test_structured_pruning_halves_the_widths_and_keeps_the_accuracy(runs) -> None:
    table = _table(runs["structured"])
    assert table["method"] == "prune" and table["details"]["structured"]
    a, b = table["original"], table["compressed"]
    assert b["parameters"] <= 0.55 * a["parameters"]
    assert b["nonzero_parameters"] == b["parameters"]  # smaller matrices, not zeros
    assert b["bytes"] < 0.55 * a["bytes"]
    assert table["gate"]["passed"] and table["gate"]["drop"] <= 1.0
    assert _linears(runs["structured"]) == [(64, 64), (64, 64), (64, 10)]
    assert _linears(runs["mlp"]) == [(64, 128), (128, 128), (128, 10)]
    record = json.loads((runs["structured"] / CONVERTERS).read_text())["converters"][-1]
    assert record["name"] == "structured_prune" and record["shapes"]["1.weight"] == [64, 64]


def test_the_pruned_run_is_a_real_run_that_eval_and_predict_use(runs, tmp_path) -> None:
    new = runs["structured"]
    names = {p.name for p in new.iterdir()}
    assert {CONFIG, METRICS, SUMMARY, MODEL, DATA_INFO, CONVERTERS, COMPRESS} <= names
    assert "checkpoints" not in names  # a compressed run is used, not resumed
    assert load_config(str(new / CONFIG)).train.max_steps == 150
    assert json.loads((new / SUMMARY).read_text())["steps"] == 150
    assert main(["eval", str(new)]) == 0
    accuracy = json.loads((new / "eval-val.json").read_text())["accuracy"]
    assert accuracy == pytest.approx(_table(new)["compressed"]["metric"]["value"])
    loaded = LoadedRun.load(new, "cpu")
    pre = loaded.preprocessor  # raw pixels of validation rows, as a user's CSV holds them
    x = build_data(loaded.cfg).val[0][:20].reshape(20, -1)
    x = x * torch.tensor(pre.scale) + torch.tensor(pre.shift)
    with open(tmp_path / "in.csv", "w", newline="") as f:
        csv.writer(f).writerows([[f"pixel{i}" for i in range(64)], *x.tolist()])
    out = tmp_path / "out.csv"
    args = ["predict", str(new), "--input", str(tmp_path / "in.csv"), "--output", str(out)]
    assert main(args) == 0
    rows = list(csv.DictReader(open(out)))
    assert [int(r["prediction"]) for r in rows] == loaded.predict(x)["predictions"]


def test_unstructured_zeros_survive_fine_tuning(runs) -> None:
    table = _table(runs["sparse"])
    a, b = table["original"], table["compressed"]
    assert not table["details"]["structured"] and a["parameters"] == b["parameters"]
    model = LoadedRun.load(runs["sparse"], "cpu").model
    weights = [getattr(m, name) for m, name in prunable_weights(model)]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(0.5 * total)  # exactly the pruned ones, after 40 steps of AdamW
    assert b["nonzero_parameters"] == a["nonzero_parameters"] - zeros
    source = LoadedRun.load(runs["mlp"], "cpu").model
    assert not torch.equal(model[1].weight != 0, torch.ones_like(model[1].weight, dtype=torch.bool))
    kept = model[1].weight != 0
    assert not torch.equal(model[1].weight[kept], source[1].weight[kept])  # it was fine-tuned
    assert json.loads((runs["sparse"] / SUMMARY).read_text())["steps"] == 40


def test_iterations_prune_in_rounds_to_the_same_widths(runs) -> None:
    rounds = _table(runs["rounds"])["details"]["rounds"]
    assert [r["finetune_steps"] for r in rounds] == [10, 10]
    assert rounds[0]["parameters"] > rounds[1]["parameters"]
    assert all("val_accuracy" in r for r in rounds)
    assert _linears(runs["rounds"]) == [(64, 64), (64, 64), (64, 10)]
    steps = [e["step"] for e in map(json.loads, open(runs["rounds"] / METRICS)) if "step" in e]
    assert max(steps) == 10  # the last round's run; the first trained in a scratch folder
    assert not [p for p in runs["rounds"].parent.iterdir() if p.name.startswith(".")]


def test_a_structured_gpt_loses_heads_and_mlp_units_and_samples(runs, capsys) -> None:
    table = _table(runs["gpt-pruned"])
    assert table["compressed"]["parameters"] < table["original"]["parameters"]
    assert "tokens_per_second" in table["compressed"]
    model = LoadedRun.load(runs["gpt-pruned"], "cpu").model
    attention, mlp = model.blocks[0].attn, model.blocks[0].mlp
    assert attention.n_head == 1 and attention.qkv.out_features == 3 * 16
    assert mlp.fc.out_features == 64 and model.token_embedding.embedding_dim == 32
    assert model.lm_head.weight is model.token_embedding.weight  # still tied
    args = ["sample", str(runs["gpt-pruned"]), "--prompt", "RO", "--max-new-tokens", "20"]
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("RO")


def test_the_shapes_record_rebuilds_a_fresh_model() -> None:
    cfg = load_config("gpt-shakespeare-char", GPT)
    spec = ModelSpec("lm", (32,), 65, vocab_size=65)
    torch.manual_seed(0)
    model = build_model(cfg.model, spec)
    shapes, sizes = tensor_shapes(model), size_attributes(model)
    from hone.compress.structured import StructuredPruner

    StructuredPruner(model, torch.randint(0, 65, (1, 32)), 0.5, 1).step()
    record = json.loads(json.dumps(PrunedShapes.between(0.5, shapes, sizes, model).record()))
    fresh = apply_converters(build_model(cfg.model, spec), [record])
    assert tensor_shapes(fresh) == tensor_shapes(model) and num_parameters(fresh) < 28_000
    fresh.load_state_dict(model.state_dict())
    x = torch.randint(0, 65, (2, 32))
    torch.testing.assert_close(fresh(x), model(x))
    assert fresh.lm_head.weight is fresh.token_embedding.weight


def test_the_unstructured_converter_restores_pruned_weights_after_a_step() -> None:
    model = nn.Sequential(nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, 1.0], [2.0, -0.2]]))
    prune = MagnitudePrune(0.5)
    prune.convert(model)
    assert model[0].weight.tolist() == [[0.0, 1.0], [2.0, 0.0]]
    with torch.no_grad():
        model[0].weight.add_(0.5)  # an optimizer that moves every weight (weight decay, momentum)
    prune.post_optimizer_step(model)
    assert model[0].weight.tolist() == [[0.0, 1.5], [2.5, 0.0]]
    assert prune.record() == {"name": "unstructured_prune", "sparsity": 0.5}


def test_rounds_and_heads_add_up() -> None:
    assert split_steps(10, 3) == [3, 3, 4] and sum(split_steps(7, 7)) == 7
    assert sum(heads_to_remove(4, 0.5, i, 3) for i in (1, 2, 3)) == 2
    assert heads_to_remove(2, 0.9, 1, 1) == 1  # never the last head
    assert heads_to_remove(1, 0.5, 1, 1) == 0


def test_a_failed_gate_exits_1_and_keeps_nothing(runs, tmp_path) -> None:
    with pytest.raises(GateFailed, match="over --max-drop -100 points"):
        compress(runs["mlp"], Prune(0.9, structured=True), tmp_path / "g", max_drop=-100, repeats=1)
    assert list(tmp_path.iterdir()) == []


def test_bad_input_is_one_line_exit_2_and_writes_nothing(runs, tmp_path, capsys) -> None:
    mlp, out = str(runs["mlp"]), ["--output", str(tmp_path / "x")]
    cases = {
        "--prune must be a fraction strictly between 0 and 1, got 0": [mlp, "--prune", "0"],
        "--prune must be a fraction strictly between 0 and 1, got 1": [mlp, "--prune", "1"],
        "got 1.5": [mlp, "--prune", "1.5", "--structured"],
        "got -0.2": [mlp, "--prune=-0.2"],
        "set --finetune-steps to at least 3": [mlp, "--prune", "0.5", "--iterations", "3"],
        "--iterations must be at least 1": [mlp, "--prune", "0.5", "--iterations", "0"],
        "--finetune-steps must be 0 or more": [mlp, "--prune", "0.5", "--finetune-steps=-1"],
        "--structured goes with --prune, not --quantize": [
            mlp,
            "--quantize",
            "int8",
            "--structured",
        ],
        "--backend goes with --quantize, not --prune": [
            mlp,
            "--prune",
            "0.5",
            "--backend",
            "torch",
        ],
        "takes no config overrides but a --distill": [mlp, "--prune", "0.5", "--optim.lr=1"],
    }
    before = sorted(tmp_path.rglob("*")), sorted(runs["mlp"].parent.iterdir())
    for message, args in cases.items():
        assert main(["compress", *args, *out]) == 2, message
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (message, err)
    assert main(["compress", mlp, "--prune", "0.5", "--output", str(runs["sparse"])]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (sorted(tmp_path.rglob("*")), sorted(runs["mlp"].parent.iterdir())) == before


def test_models_that_cannot_be_pruned_are_refused_in_one_line() -> None:
    logistic = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(ConfigError, match="found no hidden units") as refused:
        check_structured(logistic, torch.randn(1, 64), 0.5)
    assert "\n" not in str(refused.value)
    source = SimpleNamespace(model=nn.Sequential(nn.Embedding(10, 4)), files=None)
    with pytest.raises(ConfigError, match="weights of linear and convolution layers"):
        Prune(0.5).check(source)  # type: ignore[arg-type]


@pytest.mark.parametrize("override", ["model.pos=rope", "model.qk_norm=true"])
def test_gpt_attention_that_torch_pruning_mistraces_is_refused(override: str) -> None:
    cfg = load_config("gpt-shakespeare-char", [*GPT, override])
    model = build_model(cfg.model, ModelSpec("lm", (32,), 65, vocab_size=65))
    with pytest.raises(ConfigError, match="cannot prune the attention heads of a GPT"):
        check_structured(model, torch.randint(0, 65, (1, 32)), 0.5)
