"""Every compression method (each `CompressionMethod` subclass, by its `name`) through
`hone.compress.compress` on one tiny trained run: the new run lands at RUN-<suffix> with
compress.json naming the method, loads with `LoadedRun.load` and answers the source's
inputs with outputs of the same shape, is smaller in parameters, non-zero parameters or
bytes, leaves the source run byte for byte as it was and no staging folder behind; and a
run that is already int8 is refused in one line before anything is written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from hone.compress import CompressionMethod, Distill, Prune, QuantizeInt8, compress
from hone.compress.measure import validation_inputs
from hone.config import load_config
from hone.engine import Trainer
from hone.engine.inference import LoadedRun
from hone.errors import ConfigError
from hone.run_files import COMPRESS

QUIET = ["log.tensorboard=false", "log.progress=off", "train.checkpoint_every=0"]
SOURCE = ["model.width=32", "train.max_steps=30", "train.max_epochs=0", *QUIET]
# One of each method, small: a few fine-tuning or training steps. int8 on torch's backend:
# ONNX Runtime's costs seconds of imports here, and tests/compress/test_quantize runs it.
METHODS: dict[str, Callable[[], CompressionMethod]] = {
    "quantize-int8": lambda: QuantizeInt8("torch"),  # first: the others are refused its run
    "prune": lambda: Prune(0.5, finetune_steps=4),
    "distill": lambda: Distill(
        "mlp-digits", ["model.width=8", "train.max_steps=10", "train.max_epochs=0", *QUIET]
    ),
}


def subclasses(cls: type) -> set[type]:
    return {c for s in cls.__subclasses__() for c in (s, *subclasses(s))}


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def compressed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The source run, and what each method made of it: (method, table, output)."""
    root = tmp_path_factory.mktemp("compression")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HONE_CACHE_DIR", str(root / "cache"))
        source = root / "source"
        Trainer(config=load_config("mlp-digits", SOURCE), run_dir=source).fit()
        before = digest(source)
        made = {}
        for name, make in METHODS.items():
            method = make()
            table, output = compress(source, method, max_drop=100, repeats=1)
            made[name] = (method, table, output)
        return {"source": source, "before": before, "made": made, "root": root}


def test_every_method_is_in_the_table() -> None:
    classes = {type(make()) for make in METHODS.values()}
    assert classes == subclasses(CompressionMethod)
    assert {make().name for make in METHODS.values()} == set(METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_a_new_run_at_run_suffix_that_names_the_method(name: str, compressed) -> None:
    method, table, output = compressed["made"][name]
    source = compressed["source"]
    assert output == source.parent / f"{source.name}-{method.suffix}"
    assert json.loads((output / COMPRESS).read_text())["method"] == method.name == table["method"]
    assert not [p.name for p in source.parent.iterdir() if p.name.startswith(".")]  # no stage


@pytest.mark.parametrize("name", METHODS)
def test_the_new_run_loads_and_answers_like_the_source(name: str, compressed) -> None:
    _, _, output = compressed["made"][name]
    original, new = LoadedRun.load(compressed["source"], "cpu"), LoadedRun.load(output, "cpu")
    inputs = validation_inputs(original, 4)
    with torch.no_grad():
        expected, got = original.model(inputs), new.model(inputs)
    assert got.shape == expected.shape and torch.isfinite(got).all()


@pytest.mark.parametrize("name", METHODS)
def test_something_is_smaller_and_the_source_is_untouched(name: str, compressed) -> None:
    _, table, _ = compressed["made"][name]
    before, after = table["original"], table["compressed"]
    keys = ("parameters", "nonzero_parameters", "bytes")
    assert any(after[k] < before[k] for k in keys), {k: (before[k], after[k]) for k in keys}
    assert digest(compressed["source"]) == compressed["before"]


@pytest.mark.parametrize("name", METHODS)
def test_an_int8_run_is_refused_in_one_line(name: str, compressed) -> None:
    _, _, int8_run = compressed["made"]["quantize-int8"]
    target = compressed["root"] / f"from-int8-{name}"
    with pytest.raises(ConfigError, match="already int8") as error:
        compress(int8_run, METHODS[name](), target, max_drop=100, repeats=1)
    assert "\n" not in str(error.value) and not target.exists()
