"""Each trial's complete config: the base config and its overrides, plus the sampled values.

Values are set on the raw (TOML) dict and the result is built and checked by `hone.config`
exactly as `hone train` would, so a trial's config.toml and best.toml train the same run.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from hone.config import Config, apply_override, from_dict, to_toml, validate
from hone.config.loader import read_source, switch_model_family
from hone.config.step_bound import bound_steps
from hone.errors import ConfigError
from hone.tune.space import SearchSpace

# Settings every trial runs with that are not part of the tuned recipe: the tuner's own table
# of trials replaces the per-run progress bar.
TRIAL_ONLY = {"log.progress": "off"}


def set_path(raw: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted config path on a raw config dict to a typed value."""
    # apply_override checks that the key exists (naming the closest one) and makes the tables;
    # the typed value then replaces its text form so that no value is parsed twice.
    apply_override(raw, f"{path}={value}")
    node = raw
    for part in path.split(".")[:-1]:
        node = node[part]
    node[path.rsplit(".", 1)[-1]] = copy.deepcopy(value)


class TrialConfigs:
    """Builds and checks trial configs from one recipe or TOML file and its overrides."""

    def __init__(self, source: str, overrides: Sequence[str] = ()) -> None:
        raw, self.default_name = read_source(source)
        switch_model_family(raw, overrides)
        for item in overrides:
            apply_override(raw, item)
        self.raw = raw
        self.base = self._build(raw)

    def _build(self, raw: dict[str, Any]) -> Config:
        cfg = from_dict(raw)
        if not cfg.recipe:
            cfg.recipe = self.default_name
        bound_steps(cfg)  # $HONE_MAX_STEPS, as load_config
        validate(cfg)
        return cfg

    def build(self, params: Mapping[str, Any], trial: bool = True) -> Config:
        """The base config with `params` set; `trial` adds the settings trials run with."""
        raw = copy.deepcopy(self.raw)
        for path, value in {**(TRIAL_ONLY if trial else {}), **params}.items():
            set_path(raw, path, value)
        return self._build(raw)

    def toml(self, params: Mapping[str, Any]) -> str:
        """The complete config of `params` as TOML, for `hone train`."""
        return to_toml(self.build(params, trial=False))

    def value(self, path: str) -> Any:
        """The base config's value at a dotted path (config tables and free-form tables)."""
        apply_override({}, f"{path}=0")  # a ConfigError naming the closest key if unknown
        node: Any = self.base
        try:
            for part in path.split("."):
                node = getattr(node, part) if dataclasses.is_dataclass(node) else node.get(part)
        except AttributeError as e:  # a key of another model family than the base config's
            raise ConfigError(str(e)) from None
        return node

    def check(self, space: SearchSpace) -> None:
        """Build a config at both ends of every range and with every choice, before any trial."""
        for param in space.params:
            for path in param.when:
                try:
                    self.value(path)
                except ConfigError as e:
                    raise ConfigError(f"tune.space['{param.path}'].when: {e}") from None
            # an entry is checked where it is sampled: with its `when` conditions met (a key of
            # one model family is refused on a config of another)
            conditions = {path: accepted[0] for path, accepted in param.when.items()}
            for value in param.extremes():
                try:
                    self.build({**conditions, param.path: value})
                except ConfigError as e:
                    raise ConfigError(f"tune.space['{param.path}'] = {value!r}: {e}") from None
