"""Which callables may build a recipe's model: ``nn.Module`` classes, and functions marked with
:func:`model_builder`. A recipe's ``model.factory`` names one of these and nothing else, so a recipe can
never reach a function that runs a command or writes a file (netcompress's CLI and I/O functions carry
no mark), whatever ``--trust`` says.

>>> @model_builder
... def tiny(width: int = 4):
...     from torch import nn
...     return nn.Linear(width, 2)
>>> is_model_builder(tiny), is_model_builder(print)
(True, False)
"""
from __future__ import annotations

import inspect
from typing import Callable, TypeVar

from torch import nn

from ..core.registry import Registry

F = TypeVar("F", bound=Callable)
MARK = "__netcompress_model_builder__"


def model_builder(fn: F) -> F:
    """Mark ``fn`` (a plain function returning an ``nn.Module``) as a builder a recipe may name in
    ``model.factory``. Only functions defined with ``def`` can be marked."""
    if not inspect.isfunction(fn):
        raise TypeError(f"model_builder marks functions; got {type(fn).__name__}")
    setattr(fn, MARK, True)
    return fn


def is_model_builder(obj: object) -> bool:
    """True for an ``nn.Module`` subclass or a function marked with :func:`model_builder`."""
    if inspect.isclass(obj):
        return issubclass(obj, nn.Module)
    return inspect.isfunction(obj) and obj.__dict__.get(MARK) is True


class ModelRegistry(Registry):
    """The zoo's registry: every registered builder is marked with :func:`model_builder`."""

    def register(self, name: str | None = None):
        deco = super().register(name)
        return lambda fn: deco(model_builder(fn))
