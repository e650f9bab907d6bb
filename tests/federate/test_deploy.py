"""Several machines, on loopback: a real SuperLink and two SuperNodes (Flower's deployment
engine, each its own process) run the Flower app `hone federate --deploy` writes, and the
run directory they leave is a hone run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hone.cli import main
from tests.federate.conftest import TINY

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(
    not (BIN / "flower-superlink").exists(), reason="Flower's executables are not installed"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def flower_env(tmp_path: Path) -> dict[str, str]:
    """Flower's home (its config, installed apps) inside the test's folder; its executables
    on PATH (the SuperLink starts `flower-superexec` by name); one thread per process."""
    home = tmp_path / "flwr-home"
    home.mkdir()
    return {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
    }


@pytest.fixture
def services(tmp_path: Path, flower_env: dict[str, str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Started processes, each in its own session; their whole groups are ended afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in started:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start(
    services: list[subprocess.Popen[bytes]], env: dict[str, str], log: Path, *args: str
) -> None:
    with open(log, "wb") as out:
        services.append(
            subprocess.Popen(
                [str(BIN / args[0]), *args[1:]],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )


def wait_for_port(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port}")


def test_a_superlink_and_two_supernodes_train_the_run(
    tmp_path: Path, flower_env: dict[str, str], services: list[subprocess.Popen[bytes]]
) -> None:
    link = free_port()
    (Path(flower_env["FLWR_HOME"]) / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\n'
        f'address = "127.0.0.1:{link}"\ninsecure = true\n'
    )
    app, run = tmp_path / "app", tmp_path / "run"
    flags = [f"--{item}" for item in TINY]
    federated = ["--federated.clients=2", "--federated.rounds=1", "--federated.local_steps=2"]
    assert main(["federate", "mlp-digits", *flags, *federated, "--deploy", str(app),
                 "--run-dir", str(run)]) == 0  # fmt: skip

    start(services, flower_env, tmp_path / "superlink.log", "flower-superlink", "--insecure",
          "--port", str(link), "--disable-runtime-dependency-installation")  # fmt: skip
    wait_for_port(link)
    for site in (0, 1):
        start(services, flower_env, tmp_path / f"supernode-{site}.log", "flower-supernode",
              "--insecure", "--superlink", f"127.0.0.1:{link}", "--port", str(free_port()),
              "--node-config", f"partition-id={site} num-partitions=2")  # fmt: skip
    done = subprocess.run(
        [str(BIN / "flwr"), "run", str(app), "local", "--stream"],
        env=flower_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    logs = {p.name: p.read_text()[-2000:] for p in tmp_path.glob("*.log")}
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:], logs)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds"] == 1 and summary["clients"] == 2, logs
    partitions = json.loads((run / "partitions.json").read_text())
    assert [c["client"] for c in partitions["clients"]] == [0, 1]  # both sites took part
    assert (run / "checkpoints/step-0000001").is_dir() and (run / "model.safetensors").is_file()
