"""Affine (linear) quantization: typed granularity, quantization parameters, quantize/dequantize,
fake-quant with a straight-through gradient.

Conventions (shared with onnxruntime's QDQ format so torch and the deployed graph agree):
symmetric = signed, zero point 0, range [-(2^(b-1)-1), 2^(b-1)-1] (restricted, so -max and +max
are both representable); asymmetric = unsigned [0, 2^b-1] with an integer zero point. The range
is always widened to contain 0, so 0.0 quantizes to the zero point and dequantizes to exactly 0.0
(pruned weights stay pruned, zero padding stays exact).

>>> import torch
>>> x = torch.tensor([-1.0, 0.0, 0.5, 1.0])
>>> spec = QuantSpec(bits=8, symmetric=True)
>>> scale, zp = qparams(x.min(), x.max(), spec)
>>> q = quantize(x, scale, zp, spec)
>>> q.tolist()
[-127, 0, 64, 127]
>>> bool((dequantize(q, scale, zp) - x).abs().max() <= scale / 2)
True
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import torch

from ..core.config import Config, Interval
from ..core.errors import ConfigError

ALLOWED_BITS = (1, 2, 3, 4, 5, 6, 7, 8, 16)


class Granularity(Config):
    """Which elements share one scale / zero point."""


@dataclass(frozen=True)
class PerTensor(Granularity):
    """One scale / zero point for the whole tensor."""


@dataclass(frozen=True)
class PerChannel(Granularity):
    """One scale / zero point per slice along ``axis`` (0 = output channels of Conv/Linear weights)."""

    axis: int = 0


def check_bits(bits, name: str = "bits", allowed=ALLOWED_BITS) -> int:
    if not isinstance(bits, int) or isinstance(bits, bool) or bits not in allowed:
        raise ConfigError(f"{name}={bits!r} is not supported; allowed: {', '.join(map(str, allowed))} "
                          "(16 means a float16/bfloat16 cast, not integers)")
    return bits


@dataclass(frozen=True)
class QuantSpec(Config):
    """How one tensor is quantized: bit width, symmetric (signed) or asymmetric (unsigned), granularity."""

    bits: Annotated[int, Interval(2, 8)] = 8
    symmetric: bool = True
    granularity: Granularity = field(default_factory=PerTensor)

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1) - 1) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2 ** self.bits - 1

    def axis_for(self, x: torch.Tensor) -> int | None:
        """The normalised channel axis for ``x`` (None per tensor); raises ConfigError when out of range."""
        if isinstance(self.granularity, PerTensor):
            return None
        axis = self.granularity.axis
        if not -x.dim() <= axis < x.dim():
            raise ConfigError(f"PerChannel(axis={axis}) is out of range for a tensor of shape "
                              f"{tuple(x.shape)}; use an axis in [{-x.dim()}, {x.dim() - 1}]")
        return axis % x.dim()


def channel_view(x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """(C, N) view with channels first (C = 1 per tensor)."""
    if axis is None:
        return x.reshape(1, -1)
    return x.movedim(axis, 0).reshape(x.shape[axis], -1)


def _bcast(v: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    if axis is None or v.dim() == 0:
        return v
    shape = [1] * x.dim()
    shape[axis] = -1
    return v.reshape(shape)


def qparams(lo, hi, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero_point) for the range [lo, hi] (scalars or per-channel vectors); widened to include 0."""
    lo = torch.clamp(torch.as_tensor(lo, dtype=torch.float32), max=0.0)
    hi = torch.clamp(torch.as_tensor(hi, dtype=torch.float32), min=0.0)
    eps = torch.finfo(torch.float32).tiny * 2 ** 10
    if spec.symmetric:
        scale = torch.maximum(hi, -lo) / spec.qmax
        scale = torch.where(scale > eps, scale, torch.ones_like(scale))  # all-zero channel: any scale works
        return scale, torch.zeros_like(scale, dtype=torch.int32)
    scale = (hi - lo) / (spec.qmax - spec.qmin)
    scale = torch.where(scale > eps, scale, torch.ones_like(scale))
    zp = torch.clamp(spec.qmin - torch.round(lo / scale), spec.qmin, spec.qmax).to(torch.int32)
    return scale, zp


def quantize(x: torch.Tensor, scale, zero_point, spec: QuantSpec, axis: int | None = None) -> torch.Tensor:
    """Integer codes (int32) of ``x``; ``axis`` is the channel axis for per-channel parameters."""
    scale, zero_point = torch.as_tensor(scale), torch.as_tensor(zero_point)
    q = torch.round(x / _bcast(scale, x, axis)) + _bcast(zero_point, x, axis)
    return torch.clamp(q, spec.qmin, spec.qmax).to(torch.int32)


def dequantize(q: torch.Tensor, scale, zero_point, axis: int | None = None) -> torch.Tensor:
    scale, zero_point = torch.as_tensor(scale), torch.as_tensor(zero_point)
    return (q.to(torch.float32) - _bcast(zero_point, q, axis)) * _bcast(scale, q, axis)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round() forward, identity backward (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int,
                  axis: int | None = None) -> torch.Tensor:
    """quantize -> dequantize in float with straight-through gradients.

    Gradients reach ``x`` inside the clipping range (zero outside) and ``scale`` when it is a
    Parameter (LSQ, Esser et al. 2020)."""
    s = _bcast(scale, x, axis)
    z = _bcast(zero_point.to(x.dtype), x, axis)
    q = torch.clamp(round_ste(x / s) + z, qmin, qmax)
    return (q - z) * s


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (higher is better; +inf when identical)."""
    noise = (reference.double() - approx.double()).pow(2).sum()
    signal = reference.double().pow(2).sum()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(signal / noise))
