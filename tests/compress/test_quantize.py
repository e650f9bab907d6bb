"""`hone compress --quantize int8`: a new run that eval, predict and sample run in int8, a
table of both models, a gate that keeps nothing when it fails, one-line errors for bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from hone.cli import main
from hone.compress import QuantizeInt8, compress, cpu_int8_flags, pick_backend
from hone.config import load_config
from hone.data import build_data
from hone.engine import Trainer
from hone.engine.backends import OnnxModule
from hone.engine.inference import LoadedRun
from hone.engine.int8 import int8_linears, quantize_linears
from hone.errors import ConfigError, GateFailed
from hone.models.converters import read_records
from hone.run_files import (
    COMPRESS,
    CONFIG,
    CONVERTERS,
    DATA_INFO,
    MODEL,
    MODEL_INT8,
    MODEL_INT8_ONNX,
    TOKENIZER,
)
from tests.compress.conftest import QUIET, TINY_GPT, one_thread_in_tmp

# Wide enough that the int8 weights outweigh the ONNX graph's own bytes (at width 64 the
# file is only 2x smaller).
MLP = ["model.width=256", "train.max_steps=150", "train.max_epochs=0", *QUIET]
GPT = [*TINY_GPT, "train.max_steps=60"]
SIDE_KEYS = {
    "parameters",
    "nonzero_parameters",
    "bytes",
    "metric",
    "latency_ms_batch1",
    "latency_ms_batch64",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny mlp-digits and char-GPT run, each with its int8 copy: the mlp's made by the
    command line, the GPT's by the library."""
    root = tmp_path_factory.mktemp("runs")
    with one_thread_in_tmp(tmp_path_factory):
        Trainer(config=load_config("mlp-digits", MLP), run_dir=root / "mlp").fit()
        Trainer(config=load_config("gpt-shakespeare-char", GPT), run_dir=root / "gpt").fit()
        args = ["compress", str(root / "mlp"), "--quantize", "int8", "--repeats", "3"]
        assert main(args) == 0
        compress(root / "gpt", QuantizeInt8(), root / "gpt-small", repeats=3)
    return {
        "mlp": root / "mlp",
        "mlp-int8": root / "mlp-int8",
        "gpt": root / "gpt",
        "gpt-int8": root / "gpt-small",
    }


def _table(run: Path) -> dict:
    return json.loads((run / COMPRESS).read_text())


def test_the_table_has_both_sides_and_every_key(runs) -> None:
    for name, extra in (("mlp-int8", set()), ("gpt-int8", {"tokens_per_second"})):
        table = _table(runs[name])
        assert table["method"] == "quantize-int8" and table["details"]["backend"] == "onnxruntime"
        assert table["gate"]["passed"] and table["threads"] == 1 and table["repeats"] == 3
        for side in ("original", "compressed"):
            assert set(table[side]) == SIDE_KEYS | extra, (name, side)
            assert table[side]["latency_ms_batch1"] > 0 and table[side]["latency_ms_batch64"] > 0
        # The same network: int8 changes how weights are stored, not how many there are
        # (the GPT's tied embedding is stored again, as int8, for its output layer).
        a, b = table["original"], table["compressed"]
        if name == "mlp-int8":
            assert a["parameters"] == b["parameters"] == a["nonzero_parameters"]
        else:
            assert b["parameters"] > a["parameters"]


def test_int8_is_smaller_and_as_accurate(runs) -> None:
    mlp = _table(runs["mlp-int8"])
    assert mlp["original"]["bytes"] == (runs["mlp"] / MODEL).stat().st_size
    assert mlp["compressed"]["bytes"] == (runs["mlp-int8"] / MODEL_INT8_ONNX).stat().st_size
    assert mlp["original"]["bytes"] / mlp["compressed"]["bytes"] >= 3
    assert mlp["gate"]["metric"] == "accuracy" and mlp["gate"]["unit"] == "points"
    assert abs(mlp["gate"]["drop"]) <= 1.0
    gpt = _table(runs["gpt-int8"])
    # At 32 wide the embeddings (fp32) and the graph weigh as much as the int8 matrices.
    assert gpt["original"]["bytes"] / gpt["compressed"]["bytes"] >= 1.3
    assert gpt["gate"]["metric"] == "loss" and gpt["gate"]["unit"] == "%"
    assert abs(gpt["gate"]["drop"]) <= 2.0


def test_the_new_run_keeps_fp32_weights_and_loads_its_int8_model(runs) -> None:
    new = runs["mlp-int8"]
    assert sorted(p.name for p in new.iterdir()) == sorted(
        [CONFIG, DATA_INFO, MODEL, MODEL_INT8_ONNX, COMPRESS, CONVERTERS]
    )
    assert (new / MODEL).read_bytes() == (runs["mlp"] / MODEL).read_bytes()
    assert not [p for p in new.parent.iterdir() if p.name.startswith(".")]  # no stage left
    # Recorded as a converter, whose graph the onnx backend runs ("auto" picks it).
    assert read_records(new / CONVERTERS) == [{"name": "int8", "runtime": "onnxruntime"}]
    loaded = LoadedRun.load(new, "cpu", backend="onnx")
    assert isinstance(loaded.model, OnnxModule) and loaded.model.path == new / MODEL_INT8_ONNX
    assert loaded.backend.runtime == "onnxruntime"
    assert isinstance(LoadedRun.load(runs["gpt-int8"], backend="auto").model, OnnxModule)
    assert (runs["gpt-int8"] / TOKENIZER).is_dir()
    with pytest.raises(ConfigError, match="ONNX Runtime graph .*--backend onnx"):
        LoadedRun.load(new, "cpu", backend="torch")
    with pytest.raises(ConfigError, match="runs on the CPU; pass --device cpu"):
        LoadedRun.load(new, "cuda", backend="onnx")


def test_eval_and_predict_run_the_int8_model(runs, tmp_path, capsys) -> None:
    new = runs["mlp-int8"]
    assert main(["eval", str(new)]) == 0
    accuracy = json.loads((new / "eval-val.json").read_text())["accuracy"]
    assert accuracy == pytest.approx(_table(new)["compressed"]["metric"]["value"])
    fp32 = LoadedRun.load(runs["mlp"], "cpu", backend="torch")
    int8 = LoadedRun.load(new, "cpu", backend="onnx")
    pre = fp32.preprocessor  # raw pixels of validation rows, as a user's CSV holds them
    x = build_data(fp32.cfg).val[0][:20].reshape(20, -1)
    x = x * torch.tensor(pre.scale) + torch.tensor(pre.shift)
    with open(tmp_path / "in.csv", "w", newline="") as f:
        csv.writer(f).writerows([[f"pixel{i}" for i in range(64)], *x.tolist()])
    out = tmp_path / "out.csv"
    args = ["predict", str(new), "--input", str(tmp_path / "in.csv"), "--output", str(out)]
    assert main([*args, "--backend", "onnx"]) == 0
    rows = list(csv.DictReader(open(out)))
    assert [int(r["prediction"]) for r in rows] == int8.predict(x)["predictions"]
    torch.testing.assert_close(
        torch.tensor(int8.predict(x)["probabilities"]),
        torch.tensor(fp32.predict(x)["probabilities"]),
        atol=0.05,
        rtol=0,
    )


def test_sample_runs_the_int8_gpt_at_any_prompt_length(runs, capsys) -> None:
    new = runs["gpt-int8"]
    assert (
        main(["sample", str(new), "--prompt", "RO", "--max-new-tokens", "40", "--seed", "1"]) == 0
    )
    text = capsys.readouterr().out
    assert text.startswith("RO") and len(text) == len("RO") + 40 + 1
    assert main(["eval", str(new)]) == 0


def test_torch_backend_writes_int8_safetensors(runs, tmp_path) -> None:
    table, out = compress(runs["mlp"], QuantizeInt8("torch"), tmp_path / "t", repeats=2)
    assert out == tmp_path / "t" and (out / MODEL_INT8).is_file()
    assert not (out / MODEL_INT8_ONNX).exists() and table["details"]["backend"] == "torch"
    assert read_records(out / CONVERTERS) == [{"name": "int8", "runtime": "torch"}]
    loaded = LoadedRun.load(out, "cpu", backend="torch")
    assert len(int8_linears(loaded.model)) == 3 and loaded.backend.name == "torch"
    x = torch.randn(5, 64)  # the saved int8 model computes what quantizing gave, exactly
    expected = quantize_linears(LoadedRun.load(runs["mlp"], "cpu").model)(x)
    assert torch.equal(loaded.model(x), expected)
    assert table["compressed"]["parameters"] == table["original"]["parameters"]
    assert table["compressed"]["metric"]["value"] == pytest.approx(
        loaded.evaluate("val")["accuracy"]
    )
    assert abs(table["gate"]["drop"]) <= 1.0


def test_a_failed_gate_exits_1_and_keeps_nothing(runs, tmp_path, capsys) -> None:
    with pytest.raises(GateFailed, match="over --max-drop -100 points") as failure:
        compress(runs["mlp"], QuantizeInt8("torch"), tmp_path / "g", max_drop=-100, repeats=1)
    assert failure.value.report is not None and not failure.value.report["gate"]["passed"]
    args = ["compress", str(runs["mlp"]), "--quantize", "int8", "--backend", "torch"]
    assert (
        main([*args, "--output", str(tmp_path / "g"), "--max-drop", "-100", "--repeats", "1"]) == 1
    )
    captured = capsys.readouterr()
    assert "val accuracy" in captured.out  # the table that failed
    assert captured.err.count("hone: error:") == 1 and "nothing written" in captured.err
    assert list(tmp_path.iterdir()) == []


def test_bad_input_is_one_line_exit_2_and_writes_nothing(runs, tmp_path, capsys) -> None:
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(runs["mlp"] / CONFIG, unfinished)
    cases = {
        "not a hone run directory": [str(empty)],
        "has no model.safetensors": [str(unfinished)],
        "already int8": [str(runs["mlp-int8"]), "--output", str(tmp_path / "x")],
        "already exists": [str(runs["mlp"]), "--output", str(empty)],
        "--repeats must be at least 1": [str(runs["mlp"]), "--repeats", "0"],
        "--backend must be one of auto, onnxruntime, torch": [str(runs["mlp"]), "--backend", "tpu"],
        "takes no config overrides": [str(runs["mlp"]), "--train.seed=1"],
    }
    before = sorted(tmp_path.rglob("*")), sorted(runs["mlp"].parent.iterdir())
    for message, args in cases.items():
        assert main(["compress", *args, "--quantize", "int8"]) == 2, message
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (message, err)
    assert main(["compress", str(runs["mlp"])]) == 2  # no method
    assert (
        "one of the arguments --quantize --prune --distill is required" in capsys.readouterr().err
    )
    assert (sorted(tmp_path.rglob("*")), sorted(runs["mlp"].parent.iterdir())) == before


def test_a_model_without_linear_layers_is_refused() -> None:
    source = SimpleNamespace(model=nn.Sequential(nn.Conv1d(1, 1, 3), nn.ReLU()), files=None)
    with pytest.raises(ConfigError, match="quantizes nn.Linear layers, and this Sequential"):
        QuantizeInt8().check(source)  # type: ignore[arg-type]


def test_the_backend_follows_the_cpu(tmp_path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512_vnni\n")
    flags = cpu_int8_flags(cpuinfo)
    assert flags == ["avx512_vnni"] or not flags  # none assumed off Linux
    with_vnni, without = pick_backend("auto", ["avx512_vnni"]), pick_backend("auto", [])
    assert with_vnni.name == without.name == "onnxruntime"
    assert not with_vnni.reduce_range and without.reduce_range
    assert "no VNNI/AMX" in without.reason and "avx512_vnni" in with_vnni.reason
    assert pick_backend("torch", []).name == "torch"
    with pytest.raises(ConfigError, match="--backend must be one of"):
        pick_backend("cuda", [])


def test_onnx_export_of_an_int8_run_points_at_its_graph(runs, capsys) -> None:
    assert main(["export", str(runs["mlp-int8"]), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "runs an int8 model" in err and "model-int8" in err
    assert not (runs["mlp-int8"] / "model.onnx").exists()
