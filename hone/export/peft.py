"""`hone export RUN --format peft`: a LoRA run's adapters alone, in PEFT's format.

The folder holds adapter_config.json and adapter_model.safetensors
(hone.finetune.peft_format), which `peft.PeftModel.from_pretrained` loads on top of the
base checkpoint the run trained from, named in the config's base_model_name_or_path (a Hub
id, with its revision, or a folder). The Llama family only: PEFT's names for GPT-2's fused
Conv1D layers differ from hone's (export those runs with --format hf --merge).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hone.engine.backends import recorded_converters
from hone.engine.inference import LoadedRun, run_files
from hone.errors import ConfigError
from hone.finetune.lora import LoRA
from hone.finetune.peft_format import ADAPTER_CONFIG, save_peft_adapter
from hone.run_files import staging_folder


def export_peft(run: str | Path, output: str | Path) -> list[Path]:
    """Write the LoRA adapters of `run` to the folder `output` as PEFT saves them; returns
    the files. An earlier adapter there is replaced; any other existing folder refused."""
    from hone.pretrained.source import is_hub_id, split_hub_id

    if not any(c.name == LoRA.name for c in recorded_converters(run_files(run))):
        raise ConfigError(
            f"--format peft writes LoRA adapters, and {run} trained none (no [lora] enabled = "
            "true); export the whole model with --format hf"
        )
    target = Path(output)
    if target.exists() and not _replaceable(target):
        raise ConfigError(
            f"--output {target} exists and is not an adapter hone exported; pass a new folder"
        )
    loaded = LoadedRun.load(run, "cpu", backend="torch")
    model_cfg = loaded.cfg.model
    base, revision = getattr(model_cfg, "path", ""), None
    if base and is_hub_id(base):  # PEFT names a Hub checkpoint by its repository id
        base, revision = split_hub_id(base)
    with staging_folder(target) as staging:
        folder = staging / target.name
        save_peft_adapter(loaded.model, folder, base_model=base, revision=revision)
        if target.exists():
            shutil.rmtree(target)
        os.replace(folder, target)
    return sorted(target.iterdir())


def _replaceable(folder: Path) -> bool:
    """An empty folder, or an adapter written before."""
    return folder.is_dir() and ((folder / ADAPTER_CONFIG).is_file() or not any(folder.iterdir()))
