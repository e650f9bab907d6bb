"""Where a study lives: a SQLite file in the tuning directory, or any database by URL.

The default is `sqlite:///<tuning dir>/study.db`. Several worker processes on one machine
share it safely because every transaction starts with `BEGIN IMMEDIATE` (it takes the write
lock before reading, so two writers never deadlock on a lock upgrade, which SQLite answers
at once with "database is locked") and waits up to `SQLITE_BUSY_SECONDS` for the lock; the
transactions are a few milliseconds long. We keep an RDB storage rather than Optuna's journal
file because only RDB storages record heartbeats, which is how trials of a dead worker are
found, failed and retried. For many machines, `postgresql://user@host/db` (through psycopg2).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from hone.errors import ConfigError
from hone.run_files import STUDY_DB
from hone.tune.settings import TuneConfig

SQLITE_BUSY_SECONDS = 600.0


def default_storage_url(directory: str | Path) -> str:
    """The SQLite file of a tuning directory."""
    return f"sqlite:///{Path(directory).resolve() / STUDY_DB}"


def database_url(url: str) -> str:
    """`url` with a driver SQLAlchemy can load: plain postgresql:// means psycopg2 here."""
    # SQLAlchemy 2.1 maps postgresql:// to psycopg 3; hone depends on psycopg2-binary.
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def _serialize_sqlite(engine: Any) -> None:
    """SQLAlchemy's documented recipe for real SQLite transactions, with IMMEDIATE locking."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, connection_record: Any) -> None:
        # Python's sqlite3 would otherwise open transactions lazily, after the first read.
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    # Connections opened while Optuna created the tables predate the listeners.
    engine.dispose()


def open_storage(url: str, cfg: TuneConfig, heartbeat: bool = True) -> optuna.storages.RDBStorage:
    """An RDB storage for `url`, with heartbeats and bounded retries of dead workers' trials."""
    url = database_url(url)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        Path(url.split("///", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_SECONDS}
    else:
        engine_kwargs["pool_pre_ping"] = True  # a worker's connection may idle through a trial
    kwargs: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if heartbeat:
            kwargs = dict(
                heartbeat_interval=cfg.heartbeat_seconds,
                grace_period=cfg.grace_seconds or 3 * cfg.heartbeat_seconds,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=cfg.max_retry
                ),
            )
        for attempt in range(3):
            try:
                storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
                break
            except ImportError as e:
                raise ConfigError(f"--storage {url}: no database driver for it ({e})") from None
            except Exception as e:  # SQLAlchemy's errors: a bad URL, a server that is down
                # Workers that start together race to create the tables and the schema
                # version row: the losers fail once and find them there on the next try.
                if attempt < 2:
                    time.sleep(0.5 * (attempt + 1))
                    continue
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ConfigError(f"--storage {_redact(url)} cannot be opened: {first}") from None
    if storage.engine.name == "sqlite":
        _serialize_sqlite(storage.engine)
    return storage


def _redact(url: str) -> str:
    """Hide a password in a URL before printing it."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{rest.split('@', 1)[1]}"
    return url
