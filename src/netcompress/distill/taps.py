"""Feature taps: read intermediate activations of any model by layer name through forward hooks,
which are removed when the tap is released (no lasting change to the model).

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
>>> with FeatureTaps(net, ["0"]) as taps:
...     _ = net(torch.randn(5, 4))
...     taps["0"].shape
torch.Size([5, 3])
>>> len(net[0]._forward_hooks)   # released
0
"""
from __future__ import annotations

import difflib
from typing import Iterable, Sequence

import torch
from torch import nn

from ..core.errors import ModelError

__all__ = ["FeatureTaps", "resolve_modules", "layer_names"]


def layer_names(model: nn.Module) -> list[str]:
    """Every tappable module name of ``model`` (the names of ``named_modules()``, root excluded)."""
    return [name for name, _ in model.named_modules() if name]


def resolve_modules(model: nn.Module, names: Iterable[str], role: str = "model") -> dict[str, nn.Module]:
    """name -> module; a missing name raises ModelError listing the closest candidates."""
    modules = dict(model.named_modules())
    out = {}
    for name in names:
        if not isinstance(name, str) or not name or name not in modules:
            candidates = layer_names(model)
            close = difflib.get_close_matches(str(name), candidates, n=5, cutoff=0.4)
            hint = f" Closest: {close}." if close else ""
            shown = candidates if len(candidates) <= 40 else candidates[:40] + ["..."]
            raise ModelError(f"{role} ({type(model).__name__}) has no layer named {name!r}.{hint} "
                             f"Layers: {shown}")
        out[name] = modules[name]
    return out


class FeatureTaps:
    """Capture the outputs of named modules during forward passes.

    ``taps[name]`` is the output of the module's last call; a module that ran more than once since
    ``clear()`` (a shared ReLU, say) raises ModelError, because which call was meant is ambiguous.
    Use as a context manager, or call ``attach()`` / ``release()``."""

    def __init__(self, model: nn.Module, names: Sequence[str], role: str = "model"):
        self.model = model
        self.role = role
        self.modules = resolve_modules(model, names, role)  # validate before any hook is added
        self._handles: list = []
        self._outputs: dict[str, torch.Tensor] = {}
        self._calls: dict[str, int] = {}

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> "FeatureTaps":
        if self._handles:
            return self
        self.clear()
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def release(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def clear(self) -> None:
        self._outputs.clear()
        self._calls = dict.fromkeys(self.modules, 0)

    def _hook(self, name: str):
        def hook(module, args, output):
            if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
                output = output[0]
            self._outputs[name] = output
            self._calls[name] += 1
        return hook

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.modules:
            raise ModelError(f"{name!r} is not tapped on the {self.role}; tapped: {list(self.modules)}")
        calls = self._calls.get(name, 0)
        if calls == 0:
            raise ModelError(f"{self.role} layer {name!r} did not run in the forward pass (unused in "
                             "forward?); tap a layer the forward actually calls")
        if calls > 1:
            raise ModelError(f"{self.role} layer {name!r} ran {calls} times in one forward pass (a shared "
                             "module); tap a module that runs once, e.g. its parent block")
        out = self._outputs[name]
        if not isinstance(out, torch.Tensor):
            raise ModelError(f"{self.role} layer {name!r} returned {type(out).__name__}, not a tensor")
        return out

    def __enter__(self) -> "FeatureTaps":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.release()
        self._outputs.clear()  # drop references to activations (and their graphs)
