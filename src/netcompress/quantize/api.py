"""The in-place quantization verb, dispatched on the config's type through one registry.

    @QUANTIZE_TRANSFORMS.register(MyConfig)
    def _apply(model, config, data=None, **kwargs) -> None: ...
"""
from __future__ import annotations

from torch import nn

from ..core.errors import ModelError
from ..core.registry import TypeRegistry

QUANTIZE_TRANSFORMS = TypeRegistry("quantization")


def quantize_(model: nn.Module, config, data=None, **kwargs):
    """Quantize ``model`` in place as ``config`` says; ``data`` feeds calibration where needed."""
    if not isinstance(model, nn.Module):
        raise ModelError(f"quantize_ needs an nn.Module, got {type(model).__name__}")
    return QUANTIZE_TRANSFORMS.get(config)(model, config, data=data, **kwargs)
