"""Fake-quant modules and their insertion into a model.

Weights are fake-quantized through a ``torch.nn.utils.parametrize`` parametrization, so the layer
keeps its type, its parameter keeps its identity (optimizers keep working), and a pruning mask
registered earlier is applied first (a pruned zero stays an exact zero). The input activation of a
layer is fake-quantized by a child module ``input_quant`` called from a forward pre-hook.
"""
from __future__ import annotations

import logging
from typing import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..core.errors import ModelError
from .observers import MinMax, RangeTracker, weight_qparams
from .primitives import QuantSpec, fake_quantize, qparams

log = logging.getLogger(__name__)

QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class FakeQuant(nn.Module):
    """Observes (``observing``) and/or fake-quantizes (``enabled``) activations, per tensor.

    With ``learn_scale`` the scale is a Parameter trained by the straight-through gradient (LSQ)."""

    def __init__(self, spec: QuantSpec, observer=None, learn_scale: bool = False):
        super().__init__()
        self.spec = spec
        self.observer = observer or MinMax()
        self.learn_scale = learn_scale
        self.register_buffer("zero_point", torch.zeros((), dtype=torch.int32))
        if learn_scale:
            self.scale = nn.Parameter(torch.ones(()))
        else:
            self.register_buffer("scale", torch.ones(()))
        self.observing = True
        self.enabled = False
        self.ema_momentum: float | None = None  # QAT: track ranges by EMA while training
        self.tracker = RangeTracker()

    def compute_qparams(self) -> None:
        lo, hi = self.observer.clip(self.tracker, self.spec)
        scale, zp = qparams(lo.reshape(()), hi.reshape(()), self.spec)
        with torch.no_grad():
            self.scale.copy_(scale)
            self.zero_point.copy_(zp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.tracker.update(x)
            if self.ema_momentum is not None and self.training:
                self._ema_update(x)
        if not self.enabled:
            return x
        scale = self.scale.abs() + 1e-12 if self.learn_scale else self.scale
        return fake_quantize(x, scale, self.zero_point, self.spec.qmin, self.spec.qmax)

    def _ema_update(self, x: torch.Tensor) -> None:
        lo, hi = x.detach().min(), x.detach().max()
        if not hasattr(self, "_ema"):
            self._ema = (lo, hi)
        m = self.ema_momentum
        self._ema = (m * self._ema[0] + (1 - m) * lo, m * self._ema[1] + (1 - m) * hi)
        if not self.learn_scale:
            scale, zp = qparams(*self._ema, self.spec)
            self.scale.copy_(scale)
            self.zero_point.copy_(zp)

    def extra_repr(self) -> str:
        return f"bits={self.spec.bits}, symmetric={self.spec.symmetric}, enabled={self.enabled}"


class WeightFakeQuant(nn.Module):
    """Parametrization: weight -> fake-quantized weight (per-channel or per-tensor).

    ``dynamic`` recomputes the range every call (QAT, weights move); otherwise the frozen
    scale/zero point computed by :meth:`freeze` are used (PTQ)."""

    def __init__(self, spec: QuantSpec, observer=None, learn_scale: bool = False):
        super().__init__()
        self.spec = spec
        self.observer = observer or MinMax()
        self.dynamic = True
        self.enabled = True
        self.learn_scale = learn_scale
        self.axis: int | None = None
        self.register_buffer("zero_point", torch.zeros((), dtype=torch.int32))
        self.register_buffer("scale", torch.ones(()))

    def freeze(self, weight: torch.Tensor) -> None:
        scale, zp, self.axis = weight_qparams(weight.detach(), self.spec, self.observer)
        if self.learn_scale:
            self.scale = nn.Parameter(scale.clone())
        else:
            self.scale = scale
        self.zero_point = zp
        self.dynamic = False

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return w
        if self.dynamic:
            scale, zp, axis = weight_qparams(w.detach(), self.spec, self.observer)
        else:
            scale, zp, axis = self.scale, self.zero_point, self.axis
            if self.learn_scale:
                scale = scale.abs() + 1e-12
        return fake_quantize(w, scale, zp, self.spec.qmin, self.spec.qmax, axis=axis)


def _input_hook(module: nn.Module, args):
    return (module.input_quant(args[0]),) + tuple(args[1:])


def quantizable_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, layer) of every Conv/Linear."""
    for name, mod in model.named_modules():
        if isinstance(mod, QUANTIZABLE):
            yield name, mod


def attach(layer: nn.Module, weight_spec: QuantSpec | None, act_spec: QuantSpec | None,
           weight_observer=None, act_observer=None, learn_scale: bool = False) -> None:
    """Add weight and/or input-activation fake-quant to one layer."""
    if getattr(layer, "_nc_quantized", False):
        raise ModelError(f"{type(layer).__name__} is already quantized; call dequantize_(model) first")
    if weight_spec is not None:
        weight_spec.axis_for(layer.weight)  # validate the channel axis before mutating
        wq = WeightFakeQuant(weight_spec, weight_observer, learn_scale)
        parametrize.register_parametrization(layer, "weight", wq)
    if act_spec is not None:
        layer.input_quant = FakeQuant(act_spec, act_observer, learn_scale)
        layer._nc_hook = layer.register_forward_pre_hook(_input_hook)
    layer._nc_quantized = True


def weight_quantizers(layer: nn.Module) -> list[WeightFakeQuant]:
    if not parametrize.is_parametrized(layer, "weight"):
        return []
    return [p for p in layer.parametrizations.weight if isinstance(p, WeightFakeQuant)]


def fake_quants(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for name, mod in model.named_modules():
        if isinstance(mod, (FakeQuant, WeightFakeQuant)):
            yield name, mod


def set_quant_enabled(model: nn.Module, enabled: bool, weights: bool = True, acts: bool = True) -> None:
    for _, m in fake_quants(model):
        if (isinstance(m, FakeQuant) and acts) or (isinstance(m, WeightFakeQuant) and weights):
            m.enabled = enabled


def detach_quant(layer: nn.Module, bake: bool = True) -> None:
    """Remove fake-quant from ``layer``; with ``bake`` the weight keeps its quantized values."""
    if hasattr(layer, "_nc_hook"):
        layer._nc_hook.remove()
        del layer._nc_hook
        del layer.input_quant
    if parametrize.is_parametrized(layer, "weight"):
        plist = layer.parametrizations.weight
        quant_idx = [i for i, p in enumerate(plist) if isinstance(p, WeightFakeQuant)]
        if quant_idx and len(plist) == 1:
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=bake)
        elif quant_idx:  # keep other parametrizations (e.g. pruning masks): bake into the original
            with torch.no_grad():
                w = layer.weight.detach().clone()
                for i in reversed(quant_idx):
                    del plist[i]
                if bake:
                    plist.original.copy_(w)
    layer._nc_quantized = False


def dequantize_(model: nn.Module, bake: bool = True) -> None:
    """Remove every fake-quant from ``model`` (``bake``: weights keep their quantized values)."""
    for _, mod in list(model.named_modules()):
        if getattr(mod, "_nc_quantized", False):
            detach_quant(mod, bake)
