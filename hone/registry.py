"""Name registries for every choice a user makes in a config.

Each extension point (models, data sets, losses, optimizers, schedules, ...) owns one
`Registry`; implementations register themselves with a decorator. Looking up an unknown name
raises a `ConfigError` that lists the known names and names the config key to change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from hone.errors import ConfigError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to builders, with errors that list the valid names."""

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind  # e.g. "optimizer"
        self.key = key  # the config key that selects it, e.g. "optim.name"
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            assert name not in self._entries, f"{self.kind} {name!r} registered twice"
            self._entries[name] = obj
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        assert name not in self._entries, f"{self.kind} {name!r} registered twice"
        self._entries[name] = obj

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._entries)}; "
                f"set --{self.key}= to one of: {', '.join(self.names())}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
