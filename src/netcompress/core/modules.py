"""Module surgery shared by every family: replace a submodule by name.

>>> from torch import nn
>>> m = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU()))
>>> type(replace_module(m, "1.0", nn.Tanh())).__name__, type(m[1][0]).__name__
('ReLU', 'Tanh')
"""
from __future__ import annotations

from torch import nn

from .errors import ModelError


def replace_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` where the submodule ``name`` (a dotted path) was; returns the old module."""
    if not name:
        raise ModelError("replace_module cannot replace the model itself; assign the new model instead")
    parent_name, _, child = name.rpartition(".")
    try:
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child)
    except AttributeError:
        raise ModelError(f"{type(model).__name__} has no submodule {name!r}") from None
    setattr(parent, child, new)
    return old
