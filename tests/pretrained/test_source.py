"""Where a checkpoint comes from (hone.pretrained.source): a local folder, checked; an `hf:`
id through huggingface_hub's cache, with HF_HOME and HF_HUB_OFFLINE honoured; and every way
that fails, in one line."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hone.errors import ConfigError
from hone.pretrained import source
from hone.pretrained.source import is_checkpoint, resolve_checkpoint, split_hub_id
from tests.conftest import ROOT, run_hone

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Any) -> Path:
    return Path(tiny_checkpoint("llama"))


def test_a_local_folder_is_used_in_place(checkpoint: Path, tmp_path: Path) -> None:
    assert resolve_checkpoint(str(checkpoint)) == checkpoint
    assert is_checkpoint(checkpoint) and is_checkpoint("hf:org/name")
    run = tmp_path / "run"  # a hone run: its config.toml decides, not a config.json
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (run / "config.toml").write_text("")
    assert not is_checkpoint(run) and not is_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        (
            ["config.json", "pytorch_model.bin"],
            "pytorch_model.bin, a pickle, which hone never loads",
        ),
        (["config.json"], "holds no *.safetensors weights"),
        (["model.safetensors"], "holds no config.json"),
    ],
)
def test_a_folder_hone_cannot_read_is_refused(files: list[str], needle: str, tmp_path: Path):
    for name in files:
        (tmp_path / name).write_text("{}")
    with pytest.raises(ConfigError, match=re.escape(needle)):
        resolve_checkpoint(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_checkpoint(tmp_path / "absent")


def test_hub_ids() -> None:
    assert split_hub_id("hf:HuggingFaceTB/SmolLM2-135M") == ("HuggingFaceTB/SmolLM2-135M", None)
    assert split_hub_id("hf:org/name@v1.0") == ("org/name", "v1.0")
    for bad in ("hf:name", "hf:org/name@", "hf:/name", "hf:a/b/c"):
        with pytest.raises(ConfigError, match="hf:ORG/NAME or hf:ORG/NAME@REVISION"):
            split_hub_id(bad)


def _hub(tmp_path: Path, offline: bool = True) -> dict[str, str]:
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    return {**env, "HF_HUB_OFFLINE": "1"} if offline else env


def test_offline_without_a_cached_copy_exits_2_in_one_line(tmp_path: Path) -> None:
    done = run_hone("sample", "hf:hone-tests/absent", env=_hub(tmp_path))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "hone: error: cannot download hf:hone-tests/absent: the Hub is not reachable (or "
        "HF_HUB_OFFLINE=1) and it is not in the Hugging Face cache yet; connect once, or pass "
        "a local folder"
    ]


def test_a_hub_id_comes_from_the_hugging_face_cache(checkpoint: Path, tmp_path: Path) -> None:
    # The cache as snapshot_download leaves it: refs/<branch> names a commit, whose snapshot
    # folder holds the files. Offline, the Hub is never asked.
    repo = tmp_path / "hf" / "hub" / "models--hone-tests--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(checkpoint, repo / "snapshots" / COMMIT)
    code = (
        "from hone.pretrained.source import resolve_checkpoint as r; print(r('hf:hone-tests/tiny'))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), **_hub(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == repo / "snapshots" / COMMIT


def test_hub_failures_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """What snapshot_download raises (it cannot be reached from a test), each in one line."""
    import httpx
    import huggingface_hub
    from huggingface_hub import errors

    url = "https://huggingface.co/api/models/org/name/revision/v9"
    not_found = httpx.Response(404, request=httpx.Request("GET", url))
    cases = [
        (errors.RepositoryNotFoundError("404", response=not_found), "no Hub repository 'org/name'"),
        (errors.RevisionNotFoundError("404", response=not_found), "has no revision 'v9'"),
        (errors.LocalEntryNotFoundError("offline"), "the Hub is not reachable"),
        (OSError("Connection reset by peer\nmore"), "cannot download hf:org/name@v9: Connection"),
    ]
    for error, needle in cases:
        source.download.cache_clear()

        def fail(*args: Any, error: Exception = error, **kwargs: Any) -> str:
            raise error

        monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
        with pytest.raises(ConfigError, match=needle) as info:
            resolve_checkpoint("hf:org/name@v9")
        assert "\n" not in str(info.value)
    source.download.cache_clear()
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(ConfigError, match=r"pip install 'hone-ml\[hf\]'"):
        resolve_checkpoint("hf:org/name")
    source.download.cache_clear()
