"""A user's project as on their first day, shared by the tests of this folder: a data module in
the project folder, a model module beside the configs that build on recipes (`base = ...`),
and the `hone` console script run from there as a subprocess.

The console script, unlike `python -m hone`, puts neither the working directory nor a
config's folder on the import path: each command must find the user's modules by itself.
Each command is a fork of a server that imported torch already (tests/forking.py), given
the console script's import path (its own folder, then the interpreter's; no working
directory, no PYTHONPATH); what it starts (workers) are fresh interpreters, as for a user.
The project and its runs are made once.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from tests import forking

HONE = Path(sys.executable).with_name("hone")  # the console script of this environment

MYDATA = '''
"""A user data set: 4 features, 3 classes."""

import numpy as np


def load(num_samples: int = 120):
    x = np.random.default_rng(0).normal(size=(num_samples, 4))
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0).astype(np.int64)
'''

MYMODELS = '''
"""User models, beside the configs that name them."""

import math

from torch import nn


def build(spec, hidden: int = 8):
    size = math.prod(spec.input_shape)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(size, hidden), nn.Tanh(), nn.Linear(hidden, spec.num_outputs)
    )


def build_lm(spec, hidden: int = 8):
    return nn.Sequential(nn.Embedding(spec.vocab_size, hidden), nn.Linear(hidden, spec.num_outputs))
'''

QUIET = """
[log]
tensorboard = false
progress = "off"
"""

# mlp-digits with the user's model and data, a few steps, and a search space of its own.
CLASSIFY = f"""
base = "mlp-digits"

[model]
name = "custom"
target = "mymodels:build"
kwargs = {{ hidden = 8 }}

[data]
name = "custom"
target = "mydata:load"

[train]
max_epochs = 0
max_steps = 5
checkpoint_every = 0
{QUIET}
[tune]
report = false

[tune.space]
"optim.lr" = {{ type = "float", low = 1e-3, high = 1e-1, log = true }}
"""

# gpt-shakespeare-char's optimizer and schedule with the user's language model on a small
# corpus (data.path is read from the working directory, the project folder).
LM = f"""
base = "gpt-shakespeare-char"

[model]
name = "custom"
target = "mymodels:build_lm"
context_length = 16

[data]
name = "text"
path = "corpus.txt"

[train]
max_steps = 4
max_seconds = 0.0
batch_size = 4
eval_every = 0
eval_batches = 2
sample_tokens = 0
checkpoint_every = 0
{QUIET}"""


def hone_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without PYTHONPATH (nothing of ours on the path) or an API key."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HONE_API_KEY")}
    return {**env, "OMP_NUM_THREADS": "1", **(extra or {})}  # processes share two cores


@functools.cache
def console_script_path() -> list[str]:
    """sys.path of the `hone` console script: its folder, then the interpreter's own."""
    env = hone_env()
    ask = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.path[1:]))"]
    found = subprocess.run(ask, env=env, cwd=HONE.parent, capture_output=True, text=True)
    return [str(HONE.parent), *json.loads(found.stdout)]


def start(*args: str, cwd: Path, env: dict[str, str] | None = None) -> forking.Forked:
    """Start `hone ARGS` in `cwd`, as the console script would run it."""
    logs = Path(tempfile.gettempdir()) / f"hone-test-logs-{os.getpid()}"
    return forking.Forked(list(args), cwd, hone_env(env), logs, path=console_script_path())


def hone(
    *args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `hone ARGS` in `cwd`, as the console script would."""
    logs = Path(tempfile.gettempdir()) / f"hone-test-logs-{os.getpid()}"
    path = console_script_path()
    return forking.run(list(args), cwd, hone_env(env), logs, timeout, path=path)


def check(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}: {result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """proj/mydata.py, proj/configs/{mymodels.py, classify.toml, lm.toml}, a corpus, a CSV."""
    root = tmp_path_factory.mktemp("everyday") / "proj"
    (root / "configs").mkdir(parents=True)
    (root / "mydata.py").write_text(textwrap.dedent(MYDATA))
    (root / "configs" / "mymodels.py").write_text(textwrap.dedent(MYMODELS))
    (root / "configs" / "classify.toml").write_text(CLASSIFY)
    (root / "configs" / "lm.toml").write_text(LM)
    words = "the quick brown fox jumps over a lazy dog and runs away".split()
    lines = (" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) for i in range(200))
    (root / "corpus.txt").write_text("\n".join(lines) + "\n")
    (root / "new.csv").write_text("a,b,c,d\n0.1,0.2,0.3,0.4\n-1,0.5,2,0\n")
    return root


@pytest.fixture(scope="session")
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder outside the project, to run commands on its runs from."""
    return tmp_path_factory.mktemp("elsewhere")


@pytest.fixture(scope="session")
def trained(project: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`hone train configs/classify.toml` from the project folder: the run and its stdout."""
    # made before any test's own HONE_CACHE_DIR is set (tests/conftest.py): the same folder
    cache = {"HONE_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "hone-cache")}
    args = ("train", "configs/classify.toml", "--run-dir", "runs/classify")
    result = check(hone(*args, cwd=project, env=cache))
    return project / "runs" / "classify", result.stdout
