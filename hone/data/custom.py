"""`custom`: a user data set, `data.target = "package.module:factory"` called with `data.kwargs`.

The factory returns either `(x, y)` (numpy arrays or tensors; split, scaled and typed like a
CSV file, with data.task) or a ready `TensorData`, used as it is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hone.config import Config, opt, register_data_config
from hone.data.augment import AugmentConfig, build_augment
from hone.data.base import DATASETS, TensorData
from hone.data.split import task_field
from hone.data.tabular import arrays_to_data
from hone.errors import ConfigError
from hone.imports import import_target


@register_data_config("custom")
@dataclass
class CustomConfig(AugmentConfig):
    target: str = opt("", "your data set factory 'package.module:factory'")
    kwargs: dict[str, Any] = opt({}, "keyword arguments passed to the factory")
    task: str = task_field()

    def validate(self) -> None:
        if ":" not in self.target:
            raise ConfigError("data.name = 'custom' needs --data.target=package.module:factory")


@DATASETS.register("custom")
def custom(cfg: Config) -> TensorData:
    """Call the user's factory and turn what it returns into a `TensorData`."""
    data = cfg.data
    if not data.target:
        raise ConfigError(
            "data.name = 'custom' needs a factory; set --data.target=package.module:factory"
        )
    factory = import_target(data.target, "data.target")
    try:
        out = factory(**data.kwargs)
    except TypeError as e:
        raise ConfigError(
            f"data.target {data.target!r} rejected data.kwargs {data.kwargs}: {e}"
        ) from None
    if isinstance(out, TensorData):
        if out.augment is None:  # honour data.augment_* for a ready data set too
            out = dataclasses.replace(
                out, augment=build_augment(data, out.input_shape, out.preprocessor)
            )
        return out
    if not (isinstance(out, tuple | list) and len(out) == 2):
        raise ConfigError(
            f"data.target {data.target!r} must return (x, y) or a hone.data.TensorData, got "
            f"{type(out).__name__}"
        )
    return arrays_to_data(out[0], out[1], data, f"data.target {data.target!r}")
