"""Runs trained from Python: how a handed-in model is recorded (hone.models.recorded), rebuilt
through the `custom` family, and used afterwards by `load_run` and by the commands."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import hone
from hone.cli import main
from hone.config import ModelConfig, from_dict, load_config, to_toml
from hone.data import build_data
from hone.data.from_python import DataNotHeld
from hone.errors import ConfigError
from hone.imports import import_record
from hone.models import ModelSpec, build_model
from hone.models.recorded import model_config_section, record_model
from tests.compress.conftest import QUIET, one_thread_in_tmp
from tests.conftest import run_hone
from tests.engine.user_nets import (
    MLP,
    Block,
    ConfiguredNet,
    Forgetful,
    Misleading,
    NetConfig,
    Scaled,
    Tower,
)

SPEC = ModelSpec("classification", (4,), 2)  # what `custom` hands a factory that asks


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def rebuilt(model: nn.Module) -> nn.Module:
    """`model` rebuilt as a loaded run would: its record as a [model] table, through TOML,
    built by the `custom` family, then its weights loaded."""
    record = record_model(model)
    assert record.rebuildable, record.reason
    cfg = load_config(None, ["train.max_steps=1"])
    cfg.model = ModelConfig(**model_config_section(record))
    again = build_model(from_dict(tomllib.loads(to_toml(cfg))).model, SPEC)
    assert shapes(again) == shapes(model)
    again.load_state_dict(model.state_dict())
    return again


# ------------------------------------------------------------------------ recording
def test_a_user_class_records_the_arguments_it_keeps() -> None:
    record = record_model(MLP(64, hidden=16))
    assert record.rebuildable and record.reason == ""
    assert record.target == "tests.engine.user_nets:MLP"
    assert record.kwargs == {"in_features": 64, "hidden": 16}  # num_classes: the default


def test_a_sequential_of_torch_layers_and_user_modules_records() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6, bias=False), MLP(6, 5, 2))
    record = record_model(model)
    assert record.rebuildable, record.reason
    assert record.target == "torch.nn.modules.container:Sequential" and record.kwargs == {}
    assert record.args[2] == {
        "__module__": "torch.nn.modules.linear:Linear",
        "kwargs": {"in_features": 8, "out_features": 6, "bias": False},
    }
    assert record.args[3]["__module__"] == "tests.engine.user_nets:MLP"
    x = torch.randn(3, 4)
    assert torch.equal(rebuilt(model).eval()(x), model.eval()(x))


@pytest.mark.parametrize(
    ("make", "input_shape"),
    [
        (lambda: Tower(nn.Linear(4, 8), [Block(8), Block(8, norm=False)], nn.Linear(8, 2)), (4,)),
        (lambda: nn.Sequential(ConfiguredNet(NetConfig(width=4, depth=3)), nn.Linear(4, 2)), (4,)),
        (
            lambda: nn.Sequential(nn.Conv1d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(8, 2)),
            (1, 4),
        ),
    ],
    ids=["nested-user-modules", "dataclass-config", "conv"],
)
def test_round_trip_through_the_custom_family_computes_the_same(
    make: Any, input_shape: tuple[int, ...]
) -> None:
    model = make().eval()
    x = torch.randn(3, *input_shape)
    assert torch.equal(rebuilt(model).eval()(x), model(x))


def test_the_import_record_names_the_nested_user_classes() -> None:
    section = model_config_section(record_model(nn.Sequential(Block(4), nn.Linear(4, 2))))
    modules = {entry["module"] for entry in import_record({"model": section}).values()}
    assert "tests.engine.user_nets" in modules  # `hone eval` finds it from any folder


def test_a_class_from_main_is_refused_with_how_to_make_it_importable() -> None:
    class Net(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.width, self.layer = width, nn.Linear(width, 2)

    Net.__module__, Net.__qualname__ = "__main__", "Net"  # as a notebook defines it
    record = record_model(Net(3))
    assert not record.rebuildable
    assert "Net is defined in __main__" in record.reason and "\n" not in record.reason
    assert "move it into a .py module" in record.reason and "'custom'" in record.reason
    section = model_config_section(record)
    assert section == {"name": "python", "reason": record.reason}
    with pytest.raises(ConfigError, match="cannot rebuild its model.*defined in __main__"):
        build_model(ModelConfig(**section), SPEC)


def test_a_class_inside_a_function_and_one_inside_a_sequential_are_refused() -> None:
    class Local(nn.Module):
        pass

    for model in (Local(), nn.Sequential(nn.Linear(2, 2), Local())):
        record = record_model(model)
        assert not record.rebuildable and "defined inside a function" in record.reason


def test_arguments_it_cannot_find_are_refused() -> None:
    record = record_model(Forgetful(5))
    assert not record.rebuildable
    assert "find the value of Forgetful's __init__ argument(s) hidden" in record.reason
    assert "self.hidden = hidden" in record.reason and "hone_init" in record.reason


def test_a_rebuild_that_differs_is_refused() -> None:
    record = record_model(Misleading(5))
    assert not record.rebuildable
    assert (
        "Misleading(hidden=10) gives other weights (layer.bias: [10] instead of [5])"
        in record.reason
    )


def test_hone_init_names_the_factory_and_is_verified_too() -> None:
    model = Forgetful(5)
    model.hone_init = {"target": "tests.engine.user_nets:build_forgetful", "kwargs": {"hidden": 5}}
    record = record_model(model)
    assert record.rebuildable and record.target == "tests.engine.user_nets:build_forgetful"
    assert shapes(rebuilt(model)) == shapes(model)
    inside = record_model(nn.Sequential(model, nn.ReLU()))  # a nested module's own hone_init
    assert inside.rebuildable and inside.args[0]["__module__"] == record.target
    model.hone_init = {"target": "tests.engine.user_nets:build_forgetful", "kwargs": {"hidden": 6}}
    assert "gives other weights" in record_model(model).reason
    model.hone_init = "tests.engine.user_nets:build_forgetful"
    assert "hone_init must name the class or factory as" in record_model(model).reason


def test_recording_leaves_the_global_rng_alone() -> None:
    model = Scaled(4.0)  # its __init__ reads a tensor: rebuilt on the CPU, not the meta device
    state = torch.get_rng_state()
    assert record_model(model).rebuildable
    assert torch.equal(torch.get_rng_state(), state)


def test_the_python_data_set_says_how_to_evaluate() -> None:
    cfg = load_config(None, ["train.max_steps=1", "data.name=python"])
    with pytest.raises(DataNotHeld) as refused:
        build_data(cfg)
    message = str(refused.value)
    assert "\n" not in message and "--data.name=npz --data.path=FILE" in message
    assert "evaluate(data=(x, y))" in message


# -------------------------------------------------------- a run trained from Python
@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A tiny MLP of tests/engine/user_nets.py trained 100 steps on numpy digits from Python,
    and its validation arrays (also as val.npz and a CSV of a few rows)."""
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    bunch = load_digits()
    x, y = (bunch.data / 16).astype(np.float32), bunch.target
    root = tmp_path_factory.mktemp("from-python")
    with one_thread_in_tmp(tmp_path_factory):
        trainer = hone.Trainer(
            MLP(64, hidden=32),
            (x[:1500], y[:1500]),
            (x[1500:], y[1500:]),
            overrides=["train.max_steps=100", *QUIET],
            run_dir=root / "run",
        )
        trainer.fit()
        np.savez(root / "val.npz", x=x[1500:], y=y[1500:])
        rows = "\n".join(",".join(f"{v:g}" for v in row) for row in x[:5])
        header = ",".join(f"p{i}" for i in range(64))
        (root / "rows.csv").write_text(f"{header}\n{rows}\n")
        yield {"root": root, "run": root / "run", "val": (x[1500:], y[1500:])}


def test_evaluate_on_arrays_loaders_and_dict_batches_agree(digits: dict[str, Any]) -> None:
    run = hone.load_run(digits["run"], "cpu")
    x, y = digits["val"]
    on_arrays = run.evaluate(data=(x, y))
    assert on_arrays["accuracy"] > 0.5  # 100 steps learned something
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=50)
    dicts = [{"x": bx, "label": by} for bx, by in loader]
    for other in (run.evaluate(data=loader), run.evaluate(data=dicts)):
        assert other["accuracy"] == on_arrays["accuracy"]
        assert other["loss"] == pytest.approx(on_arrays["loss"], rel=1e-6)
    with pytest.raises(ConfigError, match="do not fit the model"):
        run.evaluate(data=(x[:, :10], y))


def test_commands_work_on_a_run_trained_from_python(digits: dict[str, Any]) -> None:
    root, run = digits["root"], str(digits["run"])
    config = (digits["run"] / "config.toml").read_text()
    assert 'target = "tests.engine.user_nets:MLP"' in config and 'name = "python"' in config
    assert main(["eval", run]) == 2  # the data is gone with the Python process: says how
    assert main(["eval", run, "--train.seed=1"]) == 2  # only --data.* applies to a run
    # Fresh processes in another folder, without the repository on the path: the class is
    # imported from the folder the run recorded (imports.json).
    plain = {"PYTHONPATH": ""}
    whole_file = ["--data.val_fraction=0", "--data.test_fraction=0", "--split", "train"]
    npz = ["--data.name=npz", f"--data.path={root / 'val.npz'}", "--data.normalize=none"]
    done = run_hone("eval", run, *npz, *whole_file, "--json", cwd=root, env=plain)
    assert done.returncode == 0, done.stderr
    expected = hone.load_run(run, "cpu").evaluate(data=digits["val"])
    assert json.loads(done.stdout)["accuracy"] == expected["accuracy"]
    for args in (
        ["predict", run, "--input", "rows.csv", "--output", "out.csv"],
        ["export", run, "--format", "onnx"],
        # torch's int8 (ONNX Runtime's needs an export of its own: 10 s more)
        ["compress", run, "--quantize", "int8", "--backend", "torch", *npz, "--repeats", "1"]
        + ["--max-drop", "100"],
    ):
        done = run_hone(*args, cwd=root, env=plain)
        assert done.returncode == 0, (args, done.stderr)
    assert len((root / "out.csv").read_text().splitlines()) == 6
    assert (digits["run"] / "model.onnx").is_file()
    assert hone.load_run(run, backend="onnx").evaluate(data=digits["val"]) == pytest.approx(
        expected, rel=1e-4
    )
    assert (root / "run-int8" / "compress.json").is_file()


def test_load_run_refuses_an_onnx_backend_without_the_graph(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a hone run directory"):
        hone.load_run(tmp_path, backend="onnx")
    with pytest.raises(
        ConfigError, match="unknown inference backend 'tensorrt'.*auto, onnx, torch"
    ):
        hone.load_run(tmp_path, backend="tensorrt")
