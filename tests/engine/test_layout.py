"""The engine's shape: modules small enough to read in one sitting, run file names in one
module (hone.run_files), nothing importing upward."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import hone

PACKAGE = Path(hone.__file__).parent


def test_engine_modules_stay_under_their_line_budget() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in (PACKAGE / "engine").glob("*.py")}
    assert sizes["trainer.py"] < 400, sizes
    assert max(sizes.values()) <= 400, sizes


def test_run_file_names_live_in_run_files_only() -> None:
    names = (
        "config.toml",
        "metrics.jsonl",
        "summary.json",
        "data.json",
        "converters.json",
        "model.onnx",
        "compress.json",
        "model-int8.onnx",
        "model-int8.safetensors",
    )
    pattern = re.compile("|".join(rf'"{re.escape(n)}"' for n in names))
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.name != "run_files.py" and pattern.search(p.read_text())
    ]
    assert offenders == []


# STYLE.md habit 4: a package imports only the layers above it in this table. Inside the
# foundation, a module imports only those listed before it; the building blocks do not import
# each other, nor do the applications. `hone/__init__.py` (the Python front door, whose
# public names load on first use) sits beside the CLI; importing the bare `hone` for its
# __version__ or __file__ loads nothing and is allowed everywhere.
LAYERS: dict[str, tuple[str, ...]] = {
    "foundation": (
        "errors", "run_files", "registry", "metrics", "run_records", "hardware", "imports",
        "recipes", "config", "glibc_malloc",
    ),
    "building blocks": (
        "data", "models", "optim", "losses", "track", "distributed", "checkpoint",
    ),
    # Hugging Face checkpoints in and out (issue 26): hone's models, their tokenizers and
    # data; the engine loads a checkpoint as a run through it.
    "pretrained": ("pretrained",),
    # Fine-tuning (issue 27): LoRA adapters, PEFT's files, chat data; the engine applies
    # LoRA through it (a converter) and reads its data sets.
    "finetune": ("finetune",),
    "engine": ("engine",),
    "applications": (
        "tune", "compress", "export", "serve", "doctor", "report", "runs", "federate",
    ),
    "entry points": ("cli", "hone"),
}  # fmt: skip
# The imports that break the table today, each with its reason. An entry that no import needs
# any more fails the test: remove it.
ALLOWED: dict[tuple[str, str], str] = {
    # The built-in model families register their config sections when hone.models is
    # imported; hone.config imports it on first need (lazily) so `import hone.config` stays
    # torch-free. Goes when the families register through an entry point of their own.
    ("config", "models"): "model families register their config sections",
    # Likewise each component owns its config section (issue 25) and registers it from its
    # own package, which hone.config imports on first need (hone.config.components): the
    # optimizers and data sets theirs, the engine's checkpointing, NaN guard, profiler and
    # sampling their parts of [train], `hone tune` and `hone federate` their [tune] and
    # [federated] tables (light modules: hone.tune.settings, hone.federate.settings).
    ("config", "optim"): "optimizers register their config sections",
    ("config", "data"): "data sets register their config sections",
    ("config", "engine"): "checkpointing, the NaN guard, profiler and sampling own [train] keys",
    ("config", "pretrained"): "model.name = 'pretrained' registers its config section",
    ("config", "finetune"): "hone.finetune registers its [lora] table and data.name = chat",
    ("config", "tune"): "hone tune registers its [tune] table",
    ("config", "federate"): "hone federate registers its [federated] table",
    # Sharded checkpoints (hone.distributed.dcp) are a hone.checkpoint StateIO that falls back
    # to its full format; the strategy hands the engine that StateIO.
    ("distributed", "checkpoint"): "sharded checkpoints implement the checkpoint StateIO",
    # check_supported asks OptimizerKind whether the optimizer re-evaluates a closure, which
    # several processes cannot synchronize (a lazy import).
    ("distributed", "optim"): "refusing closure optimizers in a multi-process run",
    # int8's ONNX Runtime backend exports the fp32 model with hone.export's parity-checked
    # exporter (a lazy import).
    ("compress", "export"): "int8 through ONNX Runtime exports with hone.export",
    # `hone report` draws what the other commands found: the doctor's findings, the run table
    # and config differences of `hone runs`, a study's plots and storage from hone.tune (lazy).
    ("report", "doctor"): "a run page shows the doctor's findings",
    ("report", "runs"): "the run table and config differences of `hone runs`",
    ("report", "tune"): "a study page draws hone.tune.plots",
}


def _package_of(module: str) -> str:
    """The table's name for module `module` (hone.engine.trainer -> engine; hone -> hone)."""
    parts = module.split(".")
    assert parts[0] == "hone", module
    return parts[1] if len(parts) > 1 else "hone"


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
    """(hone module, line) of every import in `path`: top level, inside functions (lazy),
    under TYPE_CHECKING, and `import_module("hone....")` calls."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".")[: -node.level + (path.name == "__init__.py")]
                base = ".".join([*package, base] if base else package)
            if base == "hone":  # `from hone import engine` names a package; `__version__` not
                found += [
                    (f"hone.{a.name}" if (PACKAGE / a.name).exists() or
                     (PACKAGE / f"{a.name}.py").exists() else "hone", node.lineno)
                    for a in node.names
                ]  # fmt: skip
            else:
                found.append((base, node.lineno))
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func).endswith("import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append((str(node.args[0].value), node.lineno))
    return [(name, line) for name, line in found if name.split(".")[0] == "hone"]


def _edges() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> the places, across every module of hone."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        source = "cli" if module == "hone.__main__" else _package_of(module)
        for name, line in _imports(path, module):
            target = _package_of(name)
            if target not in (source, "hone"):
                edges.setdefault((source, target), []).append(f"{relative}.py:{line}")
    return edges


def _allowed(source: str, target: str) -> bool:
    order = list(LAYERS)
    layer = {p: name for name, packages in LAYERS.items() for p in packages}
    if order.index(layer[target]) < order.index(layer[source]):
        return True
    foundation = LAYERS["foundation"]
    both = source in foundation and target in foundation
    return both and foundation.index(target) < foundation.index(source)


def test_every_package_has_a_place_in_the_layers() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    placed = [p for packages in LAYERS.values() for p in packages]
    assert len(placed) == len(set(placed))
    assert packages | modules | {"hone"} == set(placed)


def test_every_import_goes_down_the_layers() -> None:
    edges = _edges()
    upward = {
        edge: places
        for edge, places in edges.items()
        if not _allowed(*edge) and edge not in ALLOWED
    }
    assert upward == {}, "imports against STYLE.md habit 4 (tests/engine/test_layout.py)"
    assert [edge for edge in ALLOWED if edge not in edges] == [], "no longer needed: remove"
    assert not any(target == "cli" for _, target in edges), "nothing imports the CLI"
