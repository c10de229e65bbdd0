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
>>> [r.params_after for r in decompose_(model, DepthwiseSeparable(multiplier=1)).details["factored"]]
[200]
>>> model(torch.zeros(1, 8, 6, 6)).shape
torch.Size([1, 16, 6, 6])
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.config import PositiveInt
from ..core.select import Skip
from ..lowrank import DECOMPOSE, DecomposeConfig, Factored, candidates, decompose_, swap

__all__ = ["DepthwiseSeparable", "separable_factors", "decompose_"]


@dataclass(frozen=True)
class DepthwiseSeparable(DecomposeConfig):
    """Replace each selected kxk conv (k > 1, groups=1) by depthwise(multiplier) + pointwise 1x1;
    ``multiplier`` is the number of spatial filters per input channel."""

    multiplier: PositiveInt = 1


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


@DECOMPOSE.register(DepthwiseSeparable)
def _apply_separable(model: nn.Module, config: DepthwiseSeparable, report, *, data=None, example_inputs=None) -> None:
    plans = []
    for name, layer in candidates(model, config, (nn.Conv2d,), report, spatial=True):
        out, inp, kh, kw = layer.weight.shape
        m = min(config.multiplier, kh * kw, out)
        before, after = layer.weight.numel(), inp * m * (kh * kw + out)
        if after < before * (1 - config.min_saving):
            plans.append((name, _separable_module(layer, m), Factored(name, "separable", (m,), before, after)))
        else:
            report.skipped.append(Skip(name, type(layer).__name__, f"multiplier {m} would not save weights"))
    swap(model, plans, config, report)
