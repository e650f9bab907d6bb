"""Write an export beside its target first, so that a failure leaves nothing behind."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staging_folder(target: Path) -> Iterator[Path]:
    """An empty folder beside `target`, removed afterwards with whatever is left in it.

    Beside, because a rename from there into place is atomic (one file system). On an error
    the folders made to hold `target` are removed too: a failed export writes nothing.
    """
    missing = [folder for folder in (target.parent, *target.parent.parents) if not folder.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
    except BaseException:
        if missing:
            shutil.rmtree(missing[-1], ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
