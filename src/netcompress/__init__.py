"""netcompress: make a trained PyTorch network smaller and faster, at a measured accuracy cost.

Subpackages load on first use (``nc.models``, ``nc.measure``, ...), so ``import netcompress`` is cheap.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBPACKAGES = {"core", "data", "models", "measure", "train", "graph", "prune", "quantize", "distill",
                "lowrank", "arch", "dynamic", "export", "recipe"}
# in-place verbs, each owned by its family: name -> (subpackage, attribute)
_VERBS: dict[str, tuple[str, str]] = {
    "prune_": ("prune", "prune_"),
    "quantize_": ("quantize", "quantize_"),
    "decompose_": ("lowrank", "decompose_"),
}


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _VERBS:
        pkg, attr = _VERBS[name]
        return getattr(importlib.import_module(f"{__name__}.{pkg}"), attr)
    raise AttributeError(f"module 'netcompress' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _SUBPACKAGES | set(_VERBS))
