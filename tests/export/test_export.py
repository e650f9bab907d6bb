"""`hone export`: ONNX graphs that ONNX Runtime runs as PyTorch does, for every model family,
and safetensors bundles that predict and sample load without the run."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from hone.cli import main
from hone.config import load_config
from hone.engine import Trainer
from hone.engine.inference import LoadedRun
from hone.engine.predict import predict_csv
from hone.errors import ConfigError
from hone.export import export_bundle, export_onnx
from hone.run_files import MANIFEST, MODEL, ONNX, parity_report
from tests.conftest import TINY_GPT_RUN

QUIET = ["log.tensorboard=false", "log.progress=off", "train.checkpoint_every=0"]
RUNS = {
    "linear": ("linreg", ["train.max_steps=10"]),
    "logistic": ("mlp-digits", ["model.name=logistic", "train.max_steps=10"]),
    "mlp": ("mlp-digits", ["model.width=16", "train.max_steps=20"]),
    "cnn": ("cnn-digits", ["model.channels=[4, 8]", "train.max_steps=10"]),
    "gpt": ("gpt-shakespeare-char", [*TINY_GPT_RUN, "train.max_steps=10"]),
    "custom": (
        "linreg",
        ["model.name=custom", "model.target=tests.contracts.user_model:factory"],
    ),
    "branchy": (
        "linreg",
        ["model.name=custom", "model.target=tests.export.user_models:branchy"],
    ),
}
EXPORTABLE = ["linear", "logistic", "mlp", "cnn", "gpt", "custom"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny finished run per model family (and two user models)."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:  # the tokenized corpus too stays in tmp
        mp.setenv("HONE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hone-cache"))
        for name, (recipe, overrides) in RUNS.items():
            steps = [] if any("max_steps" in o for o in overrides) else ["train.max_steps=3"]
            cfg = load_config(recipe, [*overrides, *steps, *QUIET])
            Trainer(config=cfg, run_dir=root / name).fit()
    return {name: root / name for name in RUNS}


def _inputs(loaded: LoadedRun, batch: int, tokens: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(batch)
    if loaded.spec.task == "lm":
        return torch.randint(0, loaded.spec.vocab_size, (batch, tokens), generator=g)
    return torch.randn(batch, *loaded.spec.input_shape, generator=g)


@pytest.mark.parametrize("family", EXPORTABLE)
def test_onnx_runs_as_pytorch_at_new_shapes(runs, family, tmp_path) -> None:
    report = export_onnx(runs[family], tmp_path / "out" / "m.onnx")
    assert report.path == tmp_path / "out" / "m.onnx" and report.path.is_file()
    assert sorted(p.name for p in report.path.parent.iterdir()) == ["m.onnx", "m.onnx.parity.json"]
    stored = json.loads(parity_report(report.path).read_text())
    assert stored["max_abs_diff"] == report.max_abs_diff <= stored["tolerance"] == 1e-4
    assert {c["inputs"] for c in stored["checks"]} == {"random", "data"}
    assert len({tuple(c["shape"]) for c in stored["checks"]}) == 2  # two shapes of each
    print(f"{family}: max abs diff {report.max_abs_diff:.3g}")

    loaded = LoadedRun.load(runs[family], "cpu")
    graph = onnx.load(str(report.path))
    assert json.loads({p.key: p.value for p in graph.metadata_props}["hone.data_info"])
    session = onnxruntime.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    shapes = [(3, 16), (5, 3)] if family == "gpt" else [(3, 0), (12, 0)]  # new batch and length
    for batch, tokens in shapes:
        x = _inputs(loaded, batch, tokens)
        with torch.no_grad():
            expected = loaded.model(x).numpy()
        got = session.run(None, {name: x.numpy()})[0]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_onnx_over_tolerance_exits_1_and_leaves_no_file(runs, capsys) -> None:
    assert main(["export", str(runs["cnn"]), "--format", "onnx", "--tolerance", "1e-30"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "differs from PyTorch by" in err and "1e-30" in err
    assert not (runs["cnn"] / ONNX).exists()
    assert not parity_report(runs["cnn"] / ONNX).exists()
    assert not [p for p in runs["cnn"].iterdir() if p.name.startswith(".")]  # no staging left


def test_onnx_default_output_and_cli_summary(runs, capsys) -> None:
    assert main(["export", str(runs["linear"]), "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {runs['linear'] / ONNX}" in out and "tolerance 0.0001" in out
    assert parity_report(runs["linear"] / ONNX).is_file()
    # The graph beside the run is what the onnx backend runs, as eval and predict take it.
    graph = LoadedRun.load(runs["linear"], "cpu", backend="onnx")
    eager = LoadedRun.load(runs["linear"], "cpu", backend="torch")
    assert graph.backend.runtime == "onnxruntime" and eager.backend.runtime == "torch"
    x = torch.randn(6, *eager.spec.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(graph.model(x), eager.model(x), atol=1e-4, rtol=0)


def test_a_model_torch_cannot_export_is_one_line_naming_the_module(runs, capsys) -> None:
    assert main(["export", str(runs["branchy"]), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "torch cannot export the model to ONNX: module '1' (SignHead) at " in err
    assert "user_models.py:" in err and "if x.sum() > 0:" in err
    assert not (runs["branchy"] / ONNX).exists()


def test_bad_input_is_one_line_exit_2_and_writes_nothing(runs, tmp_path, hone_cli) -> None:
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    result = hone_cli("export", str(empty), "--format", "onnx")
    assert result.returncode == 2 and "not a hone run directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    unfinished = tmp_path / "unfinished"
    shutil.copytree(runs["mlp"], unfinished)
    (unfinished / MODEL).unlink()
    for export in (export_onnx, export_bundle):
        with pytest.raises(ConfigError, match="did not finish"):
            export(unfinished, tmp_path / "out" / "x")
    assert list(empty.iterdir()) == [] and not (tmp_path / "out").exists()
    assert main(["export", str(runs["mlp"]), "--format", "safetensors", "--tolerance", "1"]) == 2


def _write_features(path: Path, loaded: LoadedRun) -> None:
    width = int(np.prod(loaded.spec.input_shape))
    x = torch.randn(5, width, generator=torch.Generator().manual_seed(0))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(loaded.feature_names or [f"pixel{i}" for i in range(width)])
        writer.writerows(x.tolist())


def test_bundle_predicts_as_the_run(runs, tmp_path, hone_cli) -> None:
    bundle = export_bundle(runs["mlp"], tmp_path / "bundle")
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert sorted(manifest["files"]) == ["config.toml", "data.json", "model.safetensors"]
    assert sorted(p.name for p in bundle.iterdir()) == sorted([*manifest["files"], MANIFEST])
    assert manifest["format"] == "hone-bundle" and manifest["task"] == "classification"
    features = tmp_path / "features.csv"
    _write_features(features, LoadedRun.load(runs["mlp"], "cpu"))
    predict_csv(runs["mlp"], features, tmp_path / "from-run.csv", "cpu")
    result = hone_cli(
        "predict", str(bundle), "--input", str(features), "--output", str(tmp_path / "b.csv")
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "b.csv").read_text() == (tmp_path / "from-run.csv").read_text()


def test_bundle_samples_as_the_run_and_refuses_a_changed_file(runs, tmp_path, hone_cli) -> None:
    bundle = tmp_path / "gpt-bundle"
    assert (
        main(["export", str(runs["gpt"]), "--format", "safetensors", "--output", str(bundle)]) == 0
    )
    assert (bundle / "tokenizer").is_dir() and not (bundle / "checkpoints").exists()
    text = LoadedRun.load(runs["gpt"], "cpu").sample("\n", 12, seed=3)
    result = hone_cli("sample", str(bundle), "--max-new-tokens", "12", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "\n" + text + "\n"

    export_bundle(runs["gpt"], bundle)  # a bundle is replaced in place
    with open(bundle / "config.toml", "a") as f:
        f.write("# edited\n")
    with pytest.raises(ConfigError, match="config.toml does not match its manifest sha256"):
        LoadedRun.load(bundle, "cpu")
    with pytest.raises(ConfigError, match="is not a hone bundle"):
        export_bundle(runs["gpt"], runs["mlp"])  # a run directory is never overwritten
