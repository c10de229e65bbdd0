"""Weight-only block quantization in torch: what ``export.NBitsOnnx`` ships, simulated exactly, so the accuracy
measured in torch is the accuracy of the 4-bit file (the same round-to-nearest codes, computed the same way).

Weights stay a trainable shadow (straight-through gradients), so a fine-tune after ``quantize_`` is
quantization-aware; the export reads the shadow and writes the same codes.

>>> from torch import nn
>>> m = nn.Sequential(nn.Linear(64, 8))
>>> report = quantize_(m, WeightOnly(bits=4, block_size=32))
>>> len(torch.unique(m[0].weight[0, :32])) <= 16, report.details["bits"]
(True, {'0': 4})
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

from .api import QUANTIZE, QuantizeConfig, quantize_, report_bits


@dataclass(frozen=True)
class WeightOnly(QuantizeConfig):
    """Linear and embedding weights at ``bits`` in blocks of ``block_size`` along the input dimension, one scale per
    block (``symmetric``: zero point at the middle code; else one per block); activations stay float. Deploys as
    onnxruntime MatMulNBits / GatherBlockQuantized (export format ``onnx-nbits``)."""

    bits: Literal[4, 8] = 4
    block_size: Literal[16, 32, 64, 128, 256] = 32
    symmetric: bool = True


class BlockQuant(nn.Module):
    """Parametrization ``w -> dequantize(round-to-nearest block codes of w)`` with a straight-through gradient."""

    def __init__(self, bits: int, block_size: int, symmetric: bool):
        super().__init__()
        self.bits, self.block_size, self.symmetric = bits, block_size, symmetric

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        n, k = w.shape
        blocks = math.ceil(k / self.block_size)
        x = torch.zeros(n, blocks * self.block_size, dtype=torch.float32)
        x[:, :k] = w.detach().float()
        x = x.reshape(n, blocks, self.block_size)
        top = 2 ** self.bits - 1
        if self.symmetric:  # the arithmetic of export.nbits.block_quantize, in float32, step by step
            half = 2 ** (self.bits - 1)
            scale = x.abs().amax(dim=2) / (half - 1)
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            zp = torch.full_like(scale, float(half))
        else:
            lo = torch.clamp(x.amin(dim=2), max=0)
            hi = torch.clamp(x.amax(dim=2), min=0)
            scale = (hi - lo) / top
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            zp = torch.clamp(torch.round(-lo / scale), 0, top)
        q = torch.clamp(torch.round(x / scale[..., None]) + zp[..., None], 0, top)
        deq = ((q - zp[..., None]) * scale[..., None]).reshape(n, -1)[:, :k].to(w.dtype)
        return w + (deq - w).detach()


def block_quantizers(model: nn.Module) -> dict[str, BlockQuant]:
    """{layer name: its BlockQuant parametrization}."""
    return {name: p for name, m in model.named_modules() if parametrize.is_parametrized(m, "weight")
            for p in m.parametrizations.weight if isinstance(p, BlockQuant)}


def remove_block_quant_(model: nn.Module) -> None:
    """Drop the quantizers and leave the float shadow weights (what the export re-quantizes to the same codes)."""
    for name in block_quantizers(model):
        parametrize.remove_parametrizations(model.get_submodule(name), "weight", leave_parametrized=False)


@QUANTIZE.register(WeightOnly)
def _weight_only(model: nn.Module, config: WeightOnly, report, *, data=None, example_inputs=None) -> None:
    layers = config.select(model, (nn.Linear, nn.Embedding), report)
    for _, layer in layers:
        parametrize.register_parametrization(layer, "weight", BlockQuant(config.bits, config.block_size,
                                                                          config.symmetric))
    report_bits(report, layers, config.bits,
                what=f"{{bits}}-bit weights, blocks of {config.block_size}"
                     f" ({'symmetric' if config.symmetric else 'asymmetric'})")


__all__ = ["BlockQuant", "WeightOnly", "block_quantizers", "quantize_", "remove_block_quant_"]
