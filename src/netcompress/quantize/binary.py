"""Binary and ternary weights: BinaryConnect (deterministic / stochastic), XNOR per-filter scaling,
TWN and TTQ, and power-of-two weights applied incrementally (INQ).

All are weight parametrizations: the real-valued shadow weight stays the Parameter the optimizer
updates, the forward pass uses its binary/ternary/pow2 image, and the gradient computed on that
image flows straight through to the shadow weight. Exact zeros (pruned weights) stay zero.

>>> import torch
>>> from torch import nn
>>> m = nn.Sequential(nn.Linear(8, 4))
>>> _ = quantize_(m, Ternary(TWN()))
>>> torch.unique(m[0].weight).numel() <= 3
True
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..core.config import Config, Interval, Share
from ..core.errors import ConfigError
from ..train import Callback
from .api import QUANTIZE, QuantizeConfig, quantize_, quantize_layers, report_bits
from .primitives import PerChannel, PerTensor, channel_view


@dataclass(frozen=True)
class Glorot(Config):
    """BinaryConnect's fixed per-layer magnitude H = sqrt(1.5 / (fan_in + fan_out))."""


@dataclass(frozen=True)
class Binary(QuantizeConfig):
    """BinaryConnect weights in {-a, +a}. ``stochastic`` samples +a with p = hard_sigmoid(w / a) in training.

    ``scale``: ``Glorot()`` (BinaryConnect), ``PerTensor()`` (mean |w|) or ``PerChannel(0)`` (XNOR-Net)."""

    stochastic: bool = False
    scale: Glorot | PerTensor | PerChannel = field(default_factory=Glorot)


class TernaryMethod(Config):
    """How ternary weights and their scales are found."""


@dataclass(frozen=True)
class TWN(TernaryMethod):
    """Ternary Weight Networks: threshold delta = ``threshold`` * mean|w|, alpha = mean |w| above it."""

    threshold: Annotated[float, Interval(0, 2, "()")] = 0.7


@dataclass(frozen=True)
class TTQ(TernaryMethod):
    """Trained Ternary Quantization: threshold = ``threshold`` * max|w|, learned positive/negative scales."""

    threshold: Annotated[float, Interval(0, 1, "()")] = 0.05


@dataclass(frozen=True)
class Ternary(QuantizeConfig):
    """Weights in {-a, 0, +b} (TWN: one scale; TTQ: two learned scales)."""

    method: TernaryMethod = field(default_factory=TWN)


@dataclass(frozen=True)
class Pow2(QuantizeConfig):
    """Power-of-two weights {0, +-2^n1 ... +-2^n2} with ``bits`` bits (one for zero, one for sign), as in INQ.

    ``fraction`` of the largest-magnitude weights are quantized and frozen; call again with a larger
    fraction after retraining (INQ: 0.5, 0.75, 0.875, 1.0)."""

    bits: Annotated[int, Interval(2, 8)] = 5
    fraction: Share = 1.0


def _ste(image: torch.Tensor, w: torch.Tensor, grad_scale: torch.Tensor | float = 1.0) -> torch.Tensor:
    """``image`` forward; gradient ``grad_scale`` * d/dimage to ``w`` backward."""
    return image.detach() + (w - w.detach()) * grad_scale


class BinaryWeights(nn.Module):
    def __init__(self, config: Binary, fan_in: int, fan_out: int):
        super().__init__()
        self.stochastic = config.stochastic
        self.scale = config.scale
        self.glorot = math.sqrt(1.5 / (fan_in + fan_out))

    def _alpha(self, w: torch.Tensor) -> torch.Tensor | float:
        if isinstance(self.scale, Glorot):
            return self.glorot
        if isinstance(self.scale, PerTensor):
            return w.detach().abs().mean()
        axis = self.scale.axis % w.dim()
        a = channel_view(w.detach().abs(), axis).mean(dim=1)
        shape = [1] * w.dim()
        shape[axis] = -1
        return a.reshape(shape)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        a = self._alpha(w)
        if self.stochastic and self.training:
            p = torch.clamp((w.detach() / a + 1) / 2, 0, 1)  # hard sigmoid
            b = torch.where(torch.rand_like(p) < p, 1.0, -1.0)
        else:
            b = torch.where(w.detach() >= 0, 1.0, -1.0)
        b = b * (w.detach() != 0)  # pruned stays pruned
        if isinstance(self.scale, Glorot):  # BinaryConnect cancels the gradient once |w| > H
            return _ste(a * b, w, (w.detach().abs() <= a).float())
        return _ste(a * b, w)


class TernaryWeights(nn.Module):
    def __init__(self, method: TWN | TTQ, w: torch.Tensor):
        super().__init__()
        self.method = method
        if isinstance(method, TTQ):
            delta = method.threshold * w.abs().max()
            init = w.detach()[w.detach().abs() > delta].abs().mean() if (w.abs() > delta).any() else w.abs().mean()
            self.wp = nn.Parameter(init.clone().reshape(()))
            self.wn = nn.Parameter(init.clone().reshape(()))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        wd = w.detach()
        if isinstance(self.method, TWN):
            delta = self.method.threshold * wd.abs().mean()
            pos, neg = wd > delta, wd < -delta
            alpha = wd.abs()[pos | neg].mean() if (pos | neg).any() else wd.new_zeros(())
            return _ste(alpha * (pos.float() - neg.float()), w)
        delta = self.method.threshold * wd.abs().max()
        pos, neg = (wd > delta).float(), (wd < -delta).float()
        zero = 1 - pos - neg
        image = self.wp * pos - self.wn * neg  # gradients reach wp / wn: summed over their regions
        # latent weights get the scaled gradient of the TTQ paper: wp on positives, wn on negatives, 1 on zeros
        return image + (w - wd) * (self.wp.detach() * pos + self.wn.detach() * neg + zero)


class Pow2Weights(nn.Module):
    def __init__(self, bits: int, w: torch.Tensor):
        super().__init__()
        self.bits = bits
        amax = float(w.detach().abs().max()) or 1.0
        self.n1 = math.floor(math.log2(4 * amax / 3))
        self.n2 = self.n1 + 1 - 2 ** (bits - 2)  # INQ: b bits = sign + zero code + 2^(b-2) magnitudes
        self.register_buffer("frozen", torch.zeros_like(w, dtype=torch.bool))
        self.register_buffer("values", torch.zeros_like(w))

    def project(self, w: torch.Tensor) -> torch.Tensor:
        """Nearest of {0, +-2^n2, ..., +-2^n1}."""
        levels = torch.cat([torch.zeros(1), 2.0 ** torch.arange(self.n2, self.n1 + 1, dtype=torch.float32)])
        idx = torch.bucketize(w.abs(), (levels[1:] + levels[:-1]) / 2)
        return torch.sign(w) * levels[idx]

    def freeze(self, w: torch.Tensor, fraction: float) -> None:
        wd = w.detach()
        k = int(round(fraction * wd.numel()))
        if k <= 0:
            return
        order = wd.abs().flatten().argsort(descending=True)[:k]
        new = torch.zeros(wd.numel(), dtype=torch.bool)
        new[order] = True
        new = new.reshape(wd.shape) & ~self.frozen
        self.values[new] = self.project(wd)[new]
        self.frozen |= new

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.where(self.frozen, self.values, w)  # frozen weights get no gradient


def _existing(layer, cls):
    if parametrize.is_parametrized(layer, "weight"):
        return next((p for p in layer.parametrizations.weight if isinstance(p, cls)), None)
    return None


@QUANTIZE.register(Binary)
def _binary(model: nn.Module, config: Binary, report, *, data=None, example_inputs=None) -> None:
    layers = quantize_layers(model, config, report)
    if isinstance(config.scale, PerChannel):
        for _, layer in layers:
            axis = config.scale.axis
            if not -layer.weight.dim() <= axis < layer.weight.dim():
                raise ConfigError(f"PerChannel(axis={axis}) is out of range for weight {tuple(layer.weight.shape)}")
    for _, layer in layers:
        w = layer.weight
        fan_in = w[0].numel()
        fan_out = w.shape[0] * (w[0, 0].numel() if w.dim() > 2 else 1)
        parametrize.register_parametrization(layer, "weight", BinaryWeights(config, fan_in, fan_out))
    report_bits(report, layers, 1, what=f"binary weights ({type(config.scale).__name__} scale)")


@QUANTIZE.register(Ternary)
def _ternary(model: nn.Module, config: Ternary, report, *, data=None, example_inputs=None) -> None:
    layers = quantize_layers(model, config, report)
    for _, layer in layers:
        parametrize.register_parametrization(layer, "weight", TernaryWeights(config.method, layer.weight.detach()))
    report_bits(report, layers, 2, what=f"ternary weights ({type(config.method).__name__})")


@QUANTIZE.register(Pow2)
def _pow2(model: nn.Module, config: Pow2, report, *, data=None, example_inputs=None) -> None:
    layers = quantize_layers(model, config, report)
    for _, layer in layers:
        p = _existing(layer, Pow2Weights)
        if p is None:
            p = Pow2Weights(config.bits, layer.weight.detach())
            parametrize.register_parametrization(layer, "weight", p)
        p.freeze(layer.parametrizations.weight.original, config.fraction)
    report_bits(report, layers, config.bits, what=f"{config.fraction:.0%} of weights powers of two ({config.bits} bits)")


def clip_shadow_weights_(model: nn.Module) -> None:
    """BinaryConnect: clip the real-valued weights of Glorot-scaled binary layers to [-H, H] after an update."""
    for mod in model.modules():
        p = _existing(mod, BinaryWeights)
        if p is not None and isinstance(p.scale, Glorot):
            with torch.no_grad():
                mod.parametrizations.weight.original.clamp_(-p.glorot, p.glorot)


class ClipShadow(Callback):
    """Trainer callback for BinaryConnect: clip the real-valued weights to [-H, H] after every update."""

    def on_step_end(self, trainer, step: int, loss: float) -> None:
        clip_shadow_weights_(trainer.model)


__all__ = ["Binary", "ClipShadow", "Glorot", "Pow2", "TTQ", "TWN", "Ternary", "TernaryMethod", "clip_shadow_weights_",
           "quantize_"]
