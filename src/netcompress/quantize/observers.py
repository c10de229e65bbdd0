"""Calibration observers: running statistics of a tensor, and the clipping range chosen from them.

A :class:`RangeTracker` records what the statistics file reports (min, max, average per-batch
min/max, mean, std, shape) plus a bounded random sample of values. An observer is one method,
``clip(tracker, spec) -> (lo, hi)``: min/max, a moving average of per-batch extremes, a percentile,
or the clipping range that minimises the quantization MSE.

>>> import torch
>>> t = RangeTracker()
>>> t.update(torch.tensor([-2.0, 0.0, 1.0, 8.0]))
>>> MinMax().clip(t, QuantSpec(bits=8, symmetric=False))
(tensor([-2.]), tensor([8.]))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from ..core.config import Config, Fraction, Interval
from ..core.errors import DataError
from .primitives import QuantSpec, channel_view, fake_quantize, qparams


class RangeTracker:
    """Running statistics of the tensors seen, per tensor or per channel (``axis``)."""

    def __init__(self, axis: int | None = None, sample_size: int = 1 << 16, seed: int = 0):
        self.axis = axis
        self.sample_size = sample_size
        self.min = self.max = None
        self.batch_mins: list[torch.Tensor] = []
        self.batch_maxs: list[torch.Tensor] = []
        self.sum = self.sum_sq = 0.0
        self.count = 0
        self.shape: tuple[int, ...] | None = None
        self.samples: torch.Tensor | None = None  # (C, S)
        self._gen = torch.Generator().manual_seed(seed)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        v = channel_view(x, self.axis)  # (C, N)
        lo, hi = v.min(dim=1).values, v.max(dim=1).values
        self.min = lo if self.min is None else torch.minimum(self.min, lo)
        self.max = hi if self.max is None else torch.maximum(self.max, hi)
        self.batch_mins.append(lo)
        self.batch_maxs.append(hi)
        self.sum += float(v.double().sum())
        self.sum_sq += float(v.double().pow(2).sum())
        self.count += v.numel()
        self.shape = tuple(x.shape)
        # uniform subsample per batch, then trimmed: an unbiased-enough sample for percentile/MSE
        take = min(v.shape[1], self.sample_size)
        idx = torch.randperm(v.shape[1], generator=self._gen)[:take]
        cur = v[:, idx]
        self.samples = cur if self.samples is None else torch.cat([self.samples, cur], dim=1)
        if self.samples.shape[1] > self.sample_size:
            keep = torch.randperm(self.samples.shape[1], generator=self._gen)[:self.sample_size]
            self.samples = self.samples[:, keep]

    @property
    def n_batches(self) -> int:
        return len(self.batch_mins)

    def check(self, what: str = "tensor") -> None:
        if self.min is None:
            raise DataError(f"no calibration data reached {what}; pass a non-empty dataset/loader "
                            "(e.g. splits.calibration(256))")

    def stats(self) -> dict:
        """The human-readable statistics of the statistics file (floats; per-tensor summaries)."""
        self.check()
        mean = self.sum / self.count
        var = max(self.sum_sq / self.count - mean * mean, 0.0)
        return {"min": float(self.min.min()), "max": float(self.max.max()),
                "avg_min": float(torch.stack(self.batch_mins).min(dim=1).values.mean()),
                "avg_max": float(torch.stack(self.batch_maxs).max(dim=1).values.mean()),
                "mean": mean, "std": var ** 0.5, "shape": list(self.shape), "batches": self.n_batches}


class Observer(Config):
    """One-method extension point: ``clip(tracker, spec) -> (low, high)``, the range to quantize to."""

    def clip(self, tracker: "RangeTracker", spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


@dataclass(frozen=True)
class MinMax(Observer):
    """The full observed range: never clips, sensitive to outliers."""

    def clip(self, tracker: RangeTracker, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
        tracker.check()
        return tracker.min.clone(), tracker.max.clone()


@dataclass(frozen=True)
class MovingAverage(Observer):
    """Exponential moving average of per-batch min/max (momentum = weight of the past)."""

    momentum: Fraction = 0.9

    def clip(self, tracker: RangeTracker, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
        tracker.check()
        lo, hi = tracker.batch_mins[0].clone(), tracker.batch_maxs[0].clone()
        for a, b in zip(tracker.batch_mins[1:], tracker.batch_maxs[1:]):
            lo = self.momentum * lo + (1 - self.momentum) * a
            hi = self.momentum * hi + (1 - self.momentum) * b
        return lo, hi


@dataclass(frozen=True)
class Percentile(Observer):
    """Clip at the ``percentile``-th value of the sampled distribution (and 100 - p below)."""

    percentile: Annotated[float, Interval(50, 100, "(]")] = 99.99

    def clip(self, tracker: RangeTracker, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
        tracker.check()
        s = tracker.samples
        q = torch.tensor([1 - self.percentile / 100, self.percentile / 100])
        lo_hi = torch.quantile(s, q, dim=1)  # (2, C)
        return lo_hi[0], lo_hi[1]


@dataclass(frozen=True)
class MSE(Observer):
    """The clipping range (a shrink of min/max on a grid) with the least quantization MSE on the sample."""

    grid: Annotated[int, Interval(2, None)] = 80
    min_ratio: Annotated[float, Interval(0, 1, "()")] = 0.2

    def clip(self, tracker: RangeTracker, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
        tracker.check()
        s = tracker.samples  # (C, S)
        lo0, hi0 = tracker.min.clamp(max=0), tracker.max.clamp(min=0)
        ratios = torch.linspace(self.min_ratio, 1.0, self.grid)[:, None]  # (G, 1)
        lo, hi = lo0[None, :] * ratios, hi0[None, :] * ratios  # (G, C)
        scale, zp = qparams(lo, hi, spec)
        chunk = max(1, (1 << 24) // max(s.numel(), 1))  # bound memory: G x C x S floats per chunk
        errs = []
        with torch.no_grad():
            for i in range(0, self.grid, chunk):
                sc, z = scale[i:i + chunk, :, None], zp[i:i + chunk, :, None].float()
                q = torch.clamp(torch.round(s[None] / sc) + z, spec.qmin, spec.qmax)
                errs.append(((q - z) * sc - s[None]).pow(2).mean(dim=2))
        best = torch.cat(errs).argmin(dim=0)  # (C,)
        cols = torch.arange(lo.shape[1])
        return lo[best, cols], hi[best, cols]


def weight_qparams(weight: torch.Tensor, spec: QuantSpec,
                   observer=None) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """(scale, zero_point, axis) for a weight tensor, observed in one pass over the whole tensor."""
    axis = spec.axis_for(weight)
    tracker = RangeTracker(axis=axis, sample_size=max(1, weight.numel()))
    tracker.update(weight)
    lo, hi = (observer or MinMax()).clip(tracker, spec)
    scale, zp = qparams(lo, hi, spec)
    if axis is None:
        scale, zp = scale.reshape(()), zp.reshape(())
    return scale, zp, axis
