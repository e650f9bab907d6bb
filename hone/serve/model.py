"""The model a server answers with: a run loaded through `LoadedRun`, on one backend.

`hone predict`, `hone sample` and the server call the same `LoadedRun` methods, so their
answers cannot drift apart. The backend is chosen by name, as for those commands
(hone.engine.backends): PyTorch eager, or ONNX Runtime on the graph that `hone export
--format onnx` wrote beside the run; "auto", the run's own (an int8 run from `hone compress`
runs on ONNX Runtime). All model calls go through one thread: torch spreads each call over
its own intra-op threads, and one call at a time keeps them from fighting over the cores.
"""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hone.errors import ConfigError
from hone.serve.settings import ServeSettings

if TYPE_CHECKING:
    import torch

    from hone.engine.inference import LoadedRun
    from hone.run_files import RunFiles


class ServedModel:
    """What the server knows before loading (task, name) and the loaded run after."""

    def __init__(self, settings: ServeSettings) -> None:
        from hone.engine.backends import choose_backend
        from hone.engine.inference import run_files
        from hone.engine.tasks import TASKS

        self.settings = settings
        self.files = run_files(settings.run)  # a clear error for a folder that is no run
        info = json.loads(self.files.data_info.read_text())
        self.task: str = info["task"]
        # A language model is served completions; other runs predictions.
        self.generates_text = TASKS.get(self.task).generates_text
        # Known before loading, for the schema: whether the run's tokenizer can write chats.
        self.chats = self.generates_text and _has_chat_template(self.files)
        self.input_shape: tuple[int, ...] = tuple(info.get("input_shape") or ())
        root = Path(settings.run).resolve()
        # A bundle folder is called "bundle": name it after the run that holds it.
        self.name = settings.model_name or (
            root.parent.name if root.name == "bundle" else root.name
        )
        self.recipe = ""
        self.created = int(self.files.config.stat().st_mtime)
        self.backend = "loading"
        self.loaded: LoadedRun | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hone-model")
        choose_backend(settings.backend, self.files)  # fail fast: a missing graph, say

    def load(self) -> None:
        """Load the run (in the model thread, so that torch's thread settings apply there)."""
        import torch

        from hone.engine.inference import LoadedRun

        if self.settings.threads:
            torch.set_num_threads(self.settings.threads)
        settings = self.settings
        loaded = LoadedRun.load(settings.run, settings.device, backend=settings.backend)
        self.backend = loaded.backend.runtime
        self.recipe = loaded.cfg.recipe
        self.loaded = loaded

    # ------------------------------------------------------------------ predict
    def rows(self, inputs: list[Any]) -> torch.Tensor:
        """Request rows to a (n, features) tensor; a ConfigError names what is wrong."""
        import torch

        assert self.loaded is not None
        expected = math.prod(self.loaded.spec.input_shape)
        flat = []
        for i, row in enumerate(inputs):
            values = torch.tensor(row, dtype=torch.float32).flatten()
            if values.numel() != expected:
                raise ConfigError(
                    f"inputs[{i}] has {values.numel()} values, the model expects {expected} "
                    f"per row (shape {list(self.loaded.spec.input_shape)})"
                )
            flat.append(values)
        return torch.stack(flat)

    def predict(self, x: torch.Tensor) -> dict[str, Any]:
        """One batch through `LoadedRun.predict`, exactly as `hone predict` computes it."""
        assert self.loaded is not None
        return self.loaded.predict(x)

    def card(self) -> dict[str, Any]:
        return {
            "id": self.name,
            "created": self.created,
            "task": self.task,
            "recipe": self.recipe,
            "backend": self.backend,
        }

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _has_chat_template(files: RunFiles) -> bool:
    """Whether the tokenizer a language model run keeps has a chat template (a chat
    checkpoint's does; hone's own tokenizers have none)."""
    from hone.data.text.tokenizers import load_tokenizer

    if not files.tokenizer.exists():  # trained on token ids of the user's
        return False
    return getattr(load_tokenizer(str(files.tokenizer)), "chat_template", None) is not None


def finite(result: dict[str, Any]) -> bool:
    """False when the model produced NaN or infinity (inputs far outside training's range)."""
    values = [result["predictions"], result.get("probabilities") or []]
    flat: list[Any] = []
    for value in values:
        stack = list(value)
        while stack:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(item)
            else:
                flat.append(item)
    return all(not isinstance(v, float) or math.isfinite(v) for v in flat)


def now() -> int:
    return int(time.time())
