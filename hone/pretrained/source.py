"""Where a pretrained checkpoint comes from: a local folder, or the Hugging Face Hub.

`resolve_checkpoint(path)` turns what a user writes (`model.path`, or the RUN argument of
`hone sample`, `eval`, `serve`, `export`, `compress`) into a local folder holding config.json
and safetensors weights:

- a folder: used in place;
- `hf:ORG/NAME` or `hf:ORG/NAME@REVISION`: downloaded by `huggingface_hub.snapshot_download`
  into the Hub's own cache (HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE and HF_TOKEN work as for
  every Hugging Face tool), only the files hone reads: configs, safetensors weights and the
  tokenizer's files. A second call finds them there, offline too.

hone never unpickles: a checkpoint with only pytorch_model.bin (or *.pt) weights is refused.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from hone.errors import ConfigError

HUB_PREFIX = "hf:"
CONFIG_FILE = "config.json"
# What hone reads of a Hub repository (never *.bin: pickles; never the other formats).
HUB_FILES = [
    CONFIG_FILE,
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
]
PICKLED = ("*.bin", "*.pt", "*.pth", "*.ckpt")


def is_hub_id(path: str | Path) -> bool:
    """Whether `path` names a Hub repository (`hf:ORG/NAME[@REVISION]`)."""
    return str(path).startswith(HUB_PREFIX)


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` names a Hugging Face checkpoint rather than a hone run: an `hf:` id, or
    a folder whose config.json has a `model_type` and that holds no hone config.toml."""
    if is_hub_id(path):
        return True
    from hone.run_files import RunFiles

    folder = Path(path)
    if not (folder / CONFIG_FILE).is_file() or RunFiles(folder).config.is_file():
        return False
    try:
        return "model_type" in json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
        return False


def checkpoint_name(path: str | Path) -> str:
    """A short name for a checkpoint: the repository's or the folder's (SmolLM2-135M)."""
    if is_hub_id(path):
        return split_hub_id(str(path))[0].rsplit("/", 1)[-1]
    return Path(path).resolve().name


def split_hub_id(path: str) -> tuple[str, str | None]:
    """`hf:ORG/NAME@REV` -> ("ORG/NAME", "REV"); the revision None when not given."""
    repo, _, revision = path.removeprefix(HUB_PREFIX).partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")) or (_ and not revision):
        raise ConfigError(
            f"a Hub checkpoint is written hf:ORG/NAME or hf:ORG/NAME@REVISION, got {path!r}; "
            "e.g. hf:HuggingFaceTB/SmolLM2-135M"
        )
    return repo, revision or None


def resolve_checkpoint(path: str | Path) -> Path:
    """The local folder of the checkpoint `path` (a folder or `hf:ORG/NAME[@REVISION]`),
    checked to hold config.json and safetensors weights; a ConfigError in one line if not."""
    path = str(path)
    folder = download(path) if is_hub_id(path) else Path(path).expanduser()
    check_folder(folder, path)
    return folder


@cache  # one look-up on the Hub per process, however many parts of a command ask
def download(path: str) -> Path:
    """The snapshot folder of the Hub checkpoint `path` in the Hub's cache, downloading what
    is missing."""
    repo, revision = split_hub_id(path)
    try:
        import huggingface_hub
        from huggingface_hub import errors
    except ImportError:
        raise ConfigError(
            f"{path} is on the Hugging Face Hub, and downloading it needs huggingface_hub: "
            "pip install 'hone-ml[hf]'"
        ) from None
    try:
        folder = huggingface_hub.snapshot_download(
            repo, revision=revision, allow_patterns=HUB_FILES
        )
    except errors.RepositoryNotFoundError:
        raise ConfigError(
            f"no Hub repository {repo!r} (or it is private: set HF_TOKEN); check the name in {path}"
        ) from None
    except errors.RevisionNotFoundError:
        raise ConfigError(
            f"{repo} has no revision {revision!r}; name a branch, tag or commit after @"
        ) from None
    except errors.GatedRepoError:
        raise ConfigError(
            f"{repo} is gated: accept its terms on huggingface.co and set HF_TOKEN"
        ) from None
    except errors.LocalEntryNotFoundError:
        raise ConfigError(
            f"cannot download {path}: the Hub is not reachable (or HF_HUB_OFFLINE=1) and it is "
            "not in the Hugging Face cache yet; connect once, or pass a local folder"
        ) from None
    except (errors.HfHubHTTPError, OSError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot download {path}: {reason}") from None
    return Path(folder)


def check_folder(folder: Path, path: str) -> None:
    """A ConfigError unless `folder` holds a checkpoint hone can read."""
    if not folder.is_dir():
        raise ConfigError(
            f"checkpoint {path} does not exist; pass a folder with config.json and "
            "*.safetensors, or hf:ORG/NAME"
        )
    if not (folder / CONFIG_FILE).is_file():
        raise ConfigError(
            f"{path} holds no {CONFIG_FILE}, so it is not a Hugging Face checkpoint; pass the "
            "folder that save_pretrained wrote"
        )
    if not any(folder.glob("*.safetensors")):
        pickled = sorted(p.name for pattern in PICKLED for p in folder.glob(pattern))
        if pickled:
            raise ConfigError(
                f"{path} has its weights as {pickled[0]}, a pickle, which hone never loads "
                "(unpickling runs code); convert it to safetensors with transformers' "
                "save_pretrained(folder, safe_serialization=True)"
            )
        raise ConfigError(f"{path} holds no *.safetensors weights; hone reads only those")
