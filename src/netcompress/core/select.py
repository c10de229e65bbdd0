"""One selection rule for every family: which layers a verb acts on, and why the others were left alone.

``include`` / ``exclude`` are globs over layer names (``"features.*"``; a container's name covers the layers in it)
or over layer types written ``"type:Conv2d"`` (any class in the layer's MRO). A layer that holds weights but is of a type the family
cannot handle is *skipped with a reason* and a warning; naming such a layer explicitly is an error that says
it is unsupported. Normalisation layers and netcompress's own helper modules (masks, quantizers) are the
passengers of the layers around them and are not candidates.

>>> from torch import nn
>>> m = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
>>> s = select_layers(m, exclude=("2",), supported=(nn.Linear,), who="Demo")
>>> [n for n, _ in s.chosen], [(k.name, k.reason) for k in s.skipped]
(['0'], [('2', "excluded by '2'")])
"""
from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field
from typing import Sequence

from torch import nn
from torch.nn.utils import parametrize

from .config import Config, Globs
from .errors import ConfigError, ModelError
from .registry import did_you_mean

log = logging.getLogger("netcompress")

#: weight-holding layers that follow another layer's channels; never candidates on their own
PASSENGERS: tuple[type, ...] = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.PReLU,
                                parametrize.ParametrizationList)
_GLOB = set("*?[")


@dataclass(frozen=True)
class Skip:
    """A layer a verb left alone, and why."""

    name: str
    layer_type: str
    reason: str


@dataclass
class Selection:
    chosen: list[tuple[str, nn.Module]] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.chosen]


def _matches(name: str, module: nn.Module, pattern: str) -> bool:
    if pattern.startswith("type:"):
        wanted = pattern[5:]
        return any(fnmatch.fnmatchcase(c.__name__, wanted) for c in type(module).__mro__)
    return fnmatch.fnmatchcase(name, pattern) or name.startswith(pattern + ".")


def _is_internal(name: str, module: nn.Module) -> bool:
    return (".parametrizations." in f".{name}." or isinstance(module, PASSENGERS)
            or getattr(module, "_nc_internal", False))


def candidates(model: nn.Module, supported: Sequence[type]) -> list[tuple[str, nn.Module]]:
    """Layers a family could act on or must account for: those of a supported type, and every other module
    that holds parameters of its own (a custom layer using a raw ``nn.Parameter``)."""
    out = []
    for name, module in model.named_modules():
        if _is_internal(name, module):
            continue
        if isinstance(module, tuple(supported)):
            out.append((name, module))
            continue
        own = [p for pname, p in module.named_parameters(recurse=False)]
        if own and not any(isinstance(a, tuple(supported)) for a in _ancestors(model, name)):
            out.append((name, module))
    return out


def _ancestors(model: nn.Module, name: str) -> list[nn.Module]:
    parts = name.split(".") if name else []
    mods, cur = [], model
    for p in parts[:-1]:
        cur = getattr(cur, p)
        mods.append(cur)
    return ([model] if name else []) + mods


def select_layers(model: nn.Module, include: Sequence[str] = ("*",), exclude: Sequence[str] = (), *,
                  supported: Sequence[type], who: str, warn: bool = True) -> Selection:
    """The layers of ``model`` that ``who`` (a config name, for messages) acts on, and the skipped ones.

    A pattern that matches no layer at all is an error listing the layers; so is an explicit (glob-free)
    include of an unsupported layer, and a selection that leaves nothing."""
    cands = candidates(model, supported)
    label = {n: (n or "(model)") for n, _ in cands}
    for pat in (*include, *exclude):
        if not any(_matches(n, m, pat) for n, m in cands):
            names = [label[n] for n, _ in cands]
            raise ConfigError(f"{who}: layer pattern {pat!r} matches no layer.{did_you_mean(pat, names)} Layers: "
                              f"{', '.join(names)}")
    supported = tuple(supported)
    sel = Selection()
    for name, module in cands:
        kind = type(module).__name__
        hit_ex = next((p for p in exclude if _matches(name, module, p)), None)
        if hit_ex is not None:
            sel.skipped.append(Skip(label[name], kind, f"excluded by {hit_ex!r}"))
            continue
        hit_in = [p for p in include if _matches(name, module, p)]
        if not hit_in:
            sel.skipped.append(Skip(label[name], kind, "not matched by include"))
            continue
        if not isinstance(module, supported):
            explicit = [p for p in hit_in if not (_GLOB & set(p)) and not p.startswith("type:")]
            kinds = ", ".join(sorted({t.__name__ for t in supported}))
            if explicit:
                raise ModelError(f"{who}: layer {label[name]!r} is a {kind}, which {who} does not support "
                                 f"(supported: {kinds}); exclude it or convert it to a supported layer")
            reason = f"unsupported layer type {kind} (supported: {kinds})"
            sel.skipped.append(Skip(label[name], kind, reason))
            if warn:
                log.warning("%s skips %s: %s", who, label[name], reason)
            continue
        sel.chosen.append((name, module))
    if not sel.chosen:
        raise ConfigError(f"{who}: include={list(include)} exclude={list(exclude)} leave no supported layer; "
                          f"layers: {', '.join(f'{label[n]} ({type(m).__name__})' for n, m in cands)}")
    return sel


@dataclass(frozen=True)
class Selective(Config):
    """Base of the configs that act layer by layer: ``include`` / ``exclude`` (keyword-only, last)."""

    _abstract = True
    include: Globs = field(default=("*",), kw_only=True)
    exclude: Globs = field(default=(), kw_only=True)

    def select(self, model: nn.Module, supported: Sequence[type], report=None) -> list[tuple[str, nn.Module]]:
        """The chosen (name, layer) pairs; skipped layers, with reasons, go to ``report.skipped``."""
        sel = select_layers(model, self.include, self.exclude, supported=supported, who=type(self).__name__)
        if report is not None:
            report.skipped.extend(sel.skipped)
        return sel.chosen
