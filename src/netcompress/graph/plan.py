"""A pruning plan: which indices each module keeps, replayable from JSON.

``plan.apply(model)`` physically removes the other channels (a plain, smaller module of the same class);
``plan.zero_(model)`` zeroes exactly the slices removal would drop (the masked twin used by the invariant
tests); replaying a saved plan on a fresh dense model rebuilds the pruned architecture, whose state_dict
then loads.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..core.errors import CheckpointError, ModelError
from ..core.io import atomic_write, ensure_writable
from .handlers import Handler, handler_for

_REPLACEMENTS = {"Identity": nn.Identity, "ReLU": nn.ReLU}
FORMAT = "netcompress.prune_plan/1"


@dataclass
class PrunePlan:
    """modules: fqn -> {role: kept indices}, role in out / in / channel; dense: fqn -> {role: dense size};
    replace: fqn -> "Identity" | "ReLU" (whole blocks removed by depth pruning)."""

    modules: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    dense: dict[str, dict[str, int]] = field(default_factory=dict)
    replace: dict[str, str] = field(default_factory=dict)

    # ----- (de)serialisation
    def to_dict(self) -> dict:
        return {"format": FORMAT, "modules": self.modules, "dense": self.dense, "replace": self.replace}

    @classmethod
    def from_dict(cls, d: dict) -> "PrunePlan":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise CheckpointError(f"not a pruning plan (expected format {FORMAT!r})")
        bad = {v for v in d.get("replace", {}).values()} - set(_REPLACEMENTS)
        if bad:
            raise CheckpointError(f"plan replaces blocks with unknown modules {sorted(bad)}; known {sorted(_REPLACEMENTS)}")
        return cls({k: {r: [int(i) for i in v] for r, v in roles.items()} for k, roles in d["modules"].items()},
                   {k: {r: int(v) for r, v in roles.items()} for k, roles in d.get("dense", {}).items()},
                   dict(d.get("replace", {})))

    def save(self, path, force: bool = False) -> Path:
        path = ensure_writable(path, force)
        text = json.dumps(self.to_dict())
        return atomic_write(path, lambda p: p.write_text(text))

    @classmethod
    def load(cls, path) -> "PrunePlan":
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"pruning plan {path} does not exist; check the path")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"pruning plan {path} is malformed ({exc}); re-save it") from None

    def merge(self, other: "PrunePlan") -> "PrunePlan":
        """This plan followed by ``other`` (indices of ``other`` refer to the already pruned model)."""
        modules = {k: dict(v) for k, v in self.modules.items()}
        for name, roles in other.modules.items():
            for role, keep in roles.items():
                prev = modules.get(name, {}).get(role)
                modules.setdefault(name, {})[role] = [prev[i] for i in keep] if prev is not None else list(keep)
        dense = {**other.dense, **self.dense}
        return PrunePlan(modules, dense, {**self.replace, **other.replace})

    # ----- apply
    def _check(self, model: nn.Module) -> dict[str, nn.Module]:
        mods = dict(model.named_modules())
        for name, roles in {**self.modules, **{k: {} for k in self.replace}}.items():
            if name not in mods:
                raise ModelError(f"the plan names module {name!r}, which {type(model).__name__} does not have; "
                                 "replay a plan on the architecture it was made for")
            handler = _handler(mods[name], name) if roles else None
            for role, keep in roles.items():
                size = handler.channels(mods[name], role)
                if keep and (min(keep) < 0 or max(keep) >= size):
                    raise ModelError(f"the plan keeps indices up to {max(keep)} of {name!r} ({role}), which has "
                                     f"{size}; was it already pruned?")
                if not keep:
                    raise ModelError(f"the plan removes every {role} channel of {name!r}")
        return mods

    def apply(self, model: nn.Module) -> nn.Module:
        """Physically remove the channels not kept; returns ``model`` (changed in place)."""
        mods = self._check(model)
        # all new tensors first: a failure leaves the model untouched
        new = {name: handler_for(mods[name]).sliced(mods[name], roles) for name, roles in self.modules.items()}
        for name, tensors in new.items():
            handler_for(mods[name]).prune(mods[name], self.modules[name], tensors)
        for name, kind in self.replace.items():
            parent, _, child = name.rpartition(".")
            setattr(mods[parent] if parent else model, child, _REPLACEMENTS[kind]())
        return model

    @torch.no_grad()
    def zero_(self, model: nn.Module) -> nn.Module:
        """Zero (in place) every parameter slice ``apply`` would remove, leaving shapes alone: the masked
        twin (buffers such as running statistics are left as they are)."""
        if self.replace:
            raise ModelError("zero_ has no masked twin for removed blocks; use netcompress.prune.structured.depth")
        mods = self._check(model)
        for name, roles in self.modules.items():
            mod = mods[name]
            for role, keep in roles.items():
                for attr, dim in handler_for(mod).slots(mod, role):
                    t = getattr(mod, attr, None)
                    if not isinstance(t, nn.Parameter):
                        continue
                    drop = torch.ones(t.shape[dim], dtype=torch.bool)
                    drop[keep] = False
                    t.index_fill_(dim, torch.nonzero(drop).flatten().to(t.device), 0.0)
        return model


def _handler(mod: nn.Module, name: str) -> Handler:
    handler = handler_for(mod)
    if handler is None or not handler.roles:
        raise ModelError(f"the plan slices {name!r}, a {type(mod).__name__}, which has no channel handler; "
                         "register one (netcompress.graph.register_handler) or replay the plan on its own model")
    return handler
