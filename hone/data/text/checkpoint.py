"""`checkpoint`: the data set of a pretrained checkpoint used as a run (hone.pretrained.view).

A checkpoint comes with a tokenizer but no data. Its config names this data set, which keeps
the tokenizer (`data.tokenizer_path`) for the text the commands are given: `hone eval
CHECKPOINT --data.name=text --data.path=FILE` reads FILE with it, as the checkpoint was
trained to read text. Anything that needs the checkpoint's own data is told to name some.
"""

from __future__ import annotations

from dataclasses import dataclass

from hone.config import Config, opt, register_data_config
from hone.data.base import DATASETS, Data
from hone.data.from_python import DataNotHeld


@register_data_config("checkpoint")
@dataclass
class CheckpointDataConfig:
    """The checkpoint's tokenizer, kept when --data.name switches to text or tokens."""

    tokenizer: str = opt("pretrained", "the checkpoint's own tokenizer", choices=["pretrained"])
    tokenizer_path: str = opt("", "the folder of the checkpoint's tokenizer files")


@DATASETS.register("checkpoint")
def checkpoint_data(cfg: Config) -> Data:
    """Refuses: a checkpoint holds no data of its own."""
    raise DataNotHeld(
        "a pretrained checkpoint comes without data; name yours, e.g. `hone eval CHECKPOINT "
        "--data.name=text --data.path=FILE` (read with the checkpoint's tokenizer)"
    )
