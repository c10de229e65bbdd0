"""Masks that live through training, as ``torch.nn.utils.parametrize`` parametrizations.

``module.weight`` becomes ``original * mask``: the original Parameter object stays the one the optimizer
holds (its identity is stable), gradients reaching it are multiplied by the mask (masked entries get no
update), and :func:`bake_` folds the mask in, leaving a plain Parameter with exact zeros.

>>> from torch import nn
>>> lin = nn.Linear(4, 2)
>>> p = lin.weight
>>> set_mask(lin, "weight", torch.tensor([[1., 0, 1, 0], [0, 1, 0, 1]]))
>>> int(torch.count_nonzero(lin.weight)), lin.parametrizations.weight.original is p
(4, True)
>>> _ = bake_(lin)
>>> is_masked(lin, "weight"), int(torch.count_nonzero(lin.weight))
(False, 4)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..core.errors import ConfigError
from ..core.select import select_layers

#: layer types whose ``weight`` the unstructured pruners act on
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class Mask(nn.Module):
    """Parametrization ``X -> X * mask``; the mask is a buffer, so it is saved in ``state_dict``."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask

    def right_inverse(self, x: torch.Tensor) -> torch.Tensor:
        # assigning module.weight = w stores w unchanged; the mask still applies on read
        return x


@dataclass(frozen=True)
class Target:
    """One prunable tensor: ``module.<param>`` at ``name`` (the module's fully qualified name)."""

    name: str
    module: nn.Module
    param: str = "weight"

    @property
    def fqn(self) -> str:
        return f"{self.name}.{self.param}" if self.name else self.param

    def original(self) -> nn.Parameter:
        """The trainable tensor (the parametrization's original when masked)."""
        return original_param(self.module, self.param)

    def effective(self) -> torch.Tensor:
        """The tensor the forward pass sees (original * mask)."""
        with torch.no_grad():
            return getattr(self.module, self.param).detach()

    def mask(self) -> torch.Tensor:
        m = get_mask(self.module, self.param)
        return m if m is not None else torch.ones_like(self.original(), dtype=torch.bool)


def is_masked(module: nn.Module, name: str = "weight") -> bool:
    return parametrize.is_parametrized(module, name) and any(
        isinstance(p, Mask) for p in module.parametrizations[name])


def _mask_module(module: nn.Module, name: str) -> Mask | None:
    if not parametrize.is_parametrized(module, name):
        return None
    for p in module.parametrizations[name]:
        if isinstance(p, Mask):
            return p
    return None


def original_param(module: nn.Module, name: str = "weight") -> nn.Parameter:
    if parametrize.is_parametrized(module, name):
        return module.parametrizations[name].original
    return getattr(module, name)


def get_mask(module: nn.Module, name: str = "weight") -> torch.Tensor | None:
    """The boolean keep-mask of ``module.<name>``, or None when it is not masked."""
    m = _mask_module(module, name)
    return None if m is None else m.mask.bool()


def set_mask(module: nn.Module, name: str, mask: torch.Tensor) -> None:
    """Mask ``module.<name>`` with ``mask`` (bool or 0/1, same shape), replacing any earlier mask.

    The masked entries of the original are zeroed too, so baking and counting see exact zeros and a
    stale momentum buffer cannot revive them through the mask (the mask multiplies them anyway)."""
    param = original_param(module, name)
    if tuple(mask.shape) != tuple(param.shape):
        raise ConfigError(f"mask shape {tuple(mask.shape)} does not match {name} {tuple(param.shape)}")
    mask = mask.to(device=param.device, dtype=param.dtype)
    existing = _mask_module(module, name)
    if existing is not None:
        existing.mask.copy_(mask)
    else:
        parametrize.register_parametrization(module, name, Mask(mask))
    with torch.no_grad():
        original_param(module, name).mul_(mask)


def masked_targets(model: nn.Module) -> Iterator[Target]:
    for mname, module in model.named_modules():
        if parametrize.is_parametrized(module):
            for pname in list(module.parametrizations.keys()):
                if is_masked(module, pname):
                    yield Target(mname, module, pname)


def remove_mask(module: nn.Module, name: str = "weight") -> None:
    """Fold the mask into the tensor and drop the parametrization (a plain Parameter remains)."""
    if not is_masked(module, name):
        return
    plist = module.parametrizations[name]
    if len(plist) > 1:
        raise ConfigError(f"{name} carries {len(plist)} parametrizations; remove the others first")
    # torch deletes the property from the module's class, which a deepcopy of the model shares:
    # give this module a private copy of its class first, so copies keep working
    cls = module.__class__
    module.__class__ = type(cls.__name__, cls.__bases__, {k: v for k, v in cls.__dict__.items()
                                                          if k not in ("__dict__", "__weakref__")})
    parametrize.remove_parametrizations(module, name, leave_parametrized=True)


def bake_(model: nn.Module) -> nn.Module:
    """Fold every mask into its weight in place; the model is plain PyTorch afterwards."""
    for t in list(masked_targets(model)):
        remove_mask(t.module, t.param)
    return model


def sparsity(model: nn.Module, targets: Iterable[Target] | None = None) -> float:
    """Fraction of zeros over the given targets (default: every masked tensor)."""
    ts = list(masked_targets(model) if targets is None else targets)
    total = sum(t.original().numel() for t in ts)
    zeros = sum(int((t.effective() == 0).sum()) for t in ts)
    return zeros / total if total else 0.0


def select(model: nn.Module, include: Sequence[str] = ("*",), exclude: Sequence[str] = (),
           types: Sequence[type] = PRUNABLE_TYPES, param: str = "weight", who: str = "pruning",
           report=None) -> list[Target]:
    """Prunable layers chosen by ``include`` / ``exclude`` (:func:`netcompress.core.select.select_layers`);
    the layers left alone, and why, go to ``report.skipped`` when a report is given.

    >>> from netcompress.models import lenet_300_100
    >>> [t.name for t in select(lenet_300_100(), include=["net.*"], exclude=["net.5"])]
    ['net.1', 'net.3']
    """
    sel = select_layers(model, include, exclude, supported=types, who=who)
    if report is not None:
        report.skipped.extend(sel.skipped)
    return [Target(n, m, param) for n, m in sel.chosen]
