"""PostgreSQL storage: two `hone tune` processes (two "machines") share one study.

The server comes from HONE_TEST_POSTGRES_URL (default: the development and CI machines'
server, postgresql://postgres@127.0.0.1:5432/test); the test makes its own database and drops
it, and is skipped only when no server answers.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hone.tune.settings import TuneConfig
from hone.tune.storage import open_storage
from tests.tune.conftest import linreg_config
from tests.tune.test_workers import SAFE_LR, hone_tune

URL = os.environ.get("HONE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def database() -> Iterator[str]:
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(URL, connect_timeout=3)
    except psycopg2.OperationalError as e:
        pytest.skip(f"no PostgreSQL server answers at {URL}: {str(e).strip()}")
    admin.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    name = f"hone_tune_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_two_processes_share_a_postgres_study(database: str, tmp_path: Path) -> None:
    config = linreg_config(
        tmp_path / "c.toml",
        SAFE_LR,
        # Trials long enough that one process cannot end the study before the other one
        # joins: at 300 steps one often ran all 6 (5 runs of 6 on a faster machine) while the
        # other was still starting; at 2400 the test takes about as long (7-9 s) and passed
        # 6 runs of 6 there (1200 steps: 8 of 8).
        train={"max_steps": 2400, "max_epochs": 0, "eval_every": 800},
        pruner="none",
    )
    shared = (str(config), "--trials", "6", "--storage", database, "--study", "shared")
    procs = [
        hone_tune(*shared, "--dir", str(tmp_path / f"machine-{i}"), f"--tune.seed={i}")
        for i in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr_text()
    storage = open_storage(database, TuneConfig(), heartbeat=False)
    trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # Each process stops when the study has 6; two that ask at the same instant may add one.
    assert 6 <= len(complete) <= 7 and len(complete) == len(trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    assert len({t.number for t in trials}) == len(trials)
