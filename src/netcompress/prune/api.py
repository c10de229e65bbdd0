"""The in-place pruning verb, dispatched on the config's type through one registry.

Each pruning family registers a transform for its config type:

    @PRUNE_TRANSFORMS.register(MyConfig)
    def _apply(model, config, data=None, **kwargs) -> None: ...
"""
from __future__ import annotations

from torch import nn

from ..core.registry import TypeRegistry

PRUNE_TRANSFORMS = TypeRegistry("pruning")


def prune_(model: nn.Module, config, data=None, **kwargs) -> None:
    """Prune ``model`` in place as ``config`` says; ``data`` feeds data-hungry criteria."""
    PRUNE_TRANSFORMS.get(config)(model, config, data=data, **kwargs)
