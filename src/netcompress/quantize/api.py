"""The in-place quantization verb, dispatched on the config's type through one registry.

    @QUANTIZE_TRANSFORMS.register(MyConfig)
    def _apply(model, config, data=None, **kwargs) -> None: ...
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..core.errors import ConfigError, ModelError


class _TypeRegistry:
    def __init__(self):
        self._by_type: dict[type, Callable] = {}

    def register(self, config_type: type):
        def deco(fn):
            self._by_type[config_type] = fn
            return fn

        return deco

    def get(self, config) -> Callable:
        for cls in type(config).__mro__:
            if cls in self._by_type:
                return self._by_type[cls]
        known = ", ".join(sorted(t.__name__ for t in self._by_type))
        raise ConfigError(f"{type(config).__name__} is not a quantization config; known: {known}")


QUANTIZE_TRANSFORMS = _TypeRegistry()


def quantize_(model: nn.Module, config, data=None, **kwargs):
    """Quantize ``model`` in place as ``config`` says; ``data`` feeds calibration where needed."""
    if not isinstance(model, nn.Module):
        raise ModelError(f"quantize_ needs an nn.Module, got {type(model).__name__}")
    return QUANTIZE_TRANSFORMS.get(config)(model, config, data=data, **kwargs)
