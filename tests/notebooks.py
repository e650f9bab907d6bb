"""Notebooks executed in the suite: nbclient and a real ipykernel kernel on this venv's python,
found through a kernelspec written to a temp folder (nothing registered for the user), with the
venv's scripts (`hone`) first on the kernel's PATH for `!hone ...` cells."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

KERNEL = "hone-tests"


class CountingClient(NotebookClient):
    """nbclient's client, counting each cell's kernel messages by type (an update in place of
    a display leaves one output in the cell, yet each one is a message to the browser)."""

    def __init__(self, nb: nbformat.NotebookNode, **kwargs: Any) -> None:
        super().__init__(nb, **kwargs)
        self.messages: dict[int, Counter[str]] = {}

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        self.messages.setdefault(cell_index, Counter())[msg["msg_type"]] += 1
        return super().process_message(msg, cell, cell_index)


def kernel_manager(folder: Path) -> KernelManager:
    """A kernel manager for this venv's python, its kernelspec under `folder`."""
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    scripts = str(Path(sys.executable).parent)
    kernel = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "hone tests",
        "language": "python",
        "env": {
            "PATH": scripts + os.pathsep + os.environ.get("PATH", ""),
            "IPYTHONDIR": str(folder / "ipython"),  # no profile written to the home folder
            "MPLBACKEND": "agg",
        },
    }
    (spec / "kernel.json").write_text(json.dumps(kernel))
    specs = KernelSpecManager(kernel_dirs=[str(folder / "kernels")])
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def execute(
    nb: nbformat.NotebookNode, cwd: Path, kernel_folder: Path, timeout: int = 120
) -> CountingClient:
    """Run every cell of `nb` in `cwd` (outputs land in `nb`); raises CellExecutionError at the
    first cell that fails."""
    client = CountingClient(
        nb,
        km=kernel_manager(kernel_folder),
        timeout=timeout,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    return client


def text_of(outputs: list[Any]) -> str:
    """Everything a cell showed, as text: streams, plain-text results and displays, errors."""
    parts = []
    for out in outputs:
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
        elif out.get("output_type") == "error":
            parts.append("\n".join(out.get("traceback", [])))
    return "\n".join(parts)
