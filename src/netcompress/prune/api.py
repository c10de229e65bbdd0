"""The in-place pruning verb, dispatched on the config's type through one registry.

Each pruning family registers a transform for its config type:

    @PRUNE_TRANSFORMS.register(MyConfig)
    def _apply(model, config, data=None, **kwargs) -> None: ...
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..core.errors import ConfigError


class _TypeRegistry:
    """Config type -> transform (keyed by type, so a recipe's type name resolves via the config registry)."""

    def __init__(self):
        self._by_type: dict[type, Callable] = {}

    def register(self, config_type: type):
        def deco(fn):
            self._by_type[config_type] = fn
            return fn

        return deco

    def config_types(self) -> list[type]:
        """The registered config types (recipes resolve pruning config names among these)."""
        return list(self._by_type)

    def get(self, config) -> Callable:
        for cls in type(config).__mro__:
            if cls in self._by_type:
                return self._by_type[cls]
        known = ", ".join(sorted(t.__name__ for t in self._by_type))
        raise ConfigError(f"{type(config).__name__} is not a pruning config; known: {known}")


PRUNE_TRANSFORMS = _TypeRegistry()


def prune_(model: nn.Module, config, data=None, **kwargs) -> None:
    """Prune ``model`` in place as ``config`` says; ``data`` feeds data-hungry criteria."""
    PRUNE_TRANSFORMS.get(config)(model, config, data=data, **kwargs)
