"""Turn standard convolutions of a trained model into depthwise-separable ones (MobileNet's building
block), initialised from the trained kernel rather than from scratch.

A conv kernel W (out, in, kh, kw) is, for each input channel i, an (out x kh*kw) matrix W[:, i]. Its
best rank-m approximation (SVD) is m spatial filters D (kh x kw) mixed by m columns of weights P (out):
exactly a depthwise conv with channel multiplier m followed by a 1x1 pointwise conv. With
m = kh*kw the factorisation is exact; m = 1 is MobileNet's block, with ~kh*kw fewer weights and MACs
(seed 000: "Depthwise Separable Convolution"). Fine-tuning (ideally with distillation from the
original model) recovers what the truncation lost.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1))
>>> [r.params_after for r in decompose_(model, DepthwiseSeparable(multiplier=1))]
[200]
>>> model(torch.zeros(1, 8, 6, 6)).shape
torch.Size([1, 16, 6, 6])
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import ConfigError
from ..lowrank.config import _check_common
from ..lowrank.factor import DECOMPOSE_TRANSFORMS, Factored, _candidates, _swap, decompose_

__all__ = ["DepthwiseSeparable", "separable_factors", "decompose_"]


@dataclass(frozen=True)
class DepthwiseSeparable:
    """Replace each selected kxk conv (k > 1, groups=1) by depthwise(multiplier) + pointwise 1x1."""

    multiplier: int = 1
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    min_saving: float = 0.0

    def __post_init__(self):
        if not isinstance(self.multiplier, int) or isinstance(self.multiplier, bool) or self.multiplier < 1:
            raise ConfigError(f"DepthwiseSeparable.multiplier must be an integer >= 1 (filters per input "
                              f"channel); got {self.multiplier!r}")
        _check_common("DepthwiseSeparable", self.include, self.exclude, self.min_saving)
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))


def separable_factors(weight: torch.Tensor, multiplier: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(depthwise (in*m, 1, kh, kw), pointwise (out, in*m, 1, 1)) whose composition best approximates
    ``weight`` (out, in, kh, kw) in Frobenius norm, input channel by input channel."""
    out, inp, kh, kw = weight.shape
    m = min(multiplier, kh * kw, out)
    per_channel = weight.detach().double().permute(1, 0, 2, 3).reshape(inp, out, kh * kw)  # (in, out, k)
    u, s, vh = torch.linalg.svd(per_channel, full_matrices=False)  # (in, out, r), (in, r), (in, r, k)
    root = s[:, :m].sqrt()
    depthwise = (root[:, :, None] * vh[:, :m]).reshape(inp * m, 1, kh, kw)
    pointwise = (u[:, :, :m] * root[:, None, :]).permute(1, 0, 2).reshape(out, inp * m, 1, 1)
    return depthwise, pointwise


def _separable_module(layer: nn.Conv2d, multiplier: int) -> nn.Sequential:
    depthwise_w, pointwise_w = separable_factors(layer.weight, multiplier)
    channels = depthwise_w.shape[0]
    depthwise = nn.Conv2d(layer.in_channels, channels, layer.kernel_size, stride=layer.stride,
                          padding=layer.padding, dilation=layer.dilation, groups=layer.in_channels,
                          bias=False, padding_mode=layer.padding_mode)
    pointwise = nn.Conv2d(channels, layer.out_channels, 1, bias=layer.bias is not None)
    depthwise.weight.data = depthwise_w.to(layer.weight.dtype).contiguous()
    pointwise.weight.data = pointwise_w.to(layer.weight.dtype).contiguous()
    if layer.bias is not None:
        pointwise.bias.data = layer.bias.detach().clone()
    return nn.Sequential(depthwise, pointwise).to(layer.weight.device)


@DECOMPOSE_TRANSFORMS.register(DepthwiseSeparable)
def _apply_separable(model: nn.Module, config: DepthwiseSeparable, data=None) -> list[Factored]:
    plans = []
    for name, layer in _candidates(model, config.include, config.exclude, (nn.Conv2d,)):
        out, inp, kh, kw = layer.weight.shape
        if kh * kw == 1:
            continue
        m = min(config.multiplier, kh * kw, out)
        before, after = layer.weight.numel(), inp * m * (kh * kw + out)
        if after < before * (1 - config.min_saving):
            plans.append((name, _separable_module(layer, m), Factored(name, "separable", (m,), before, after)))
    return _swap(model, plans, config)
