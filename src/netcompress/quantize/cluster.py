"""Deep Compression weight sharing: k-means over each layer's nonzero weights (linear
initialisation), then centroid fine-tuning where each centroid's gradient is the sum of the
gradients of the weights that share it (Han et al., 2016).

Exact zeros (pruned weights) are not clustered and stay exactly zero.

>>> import torch
>>> from torch import nn
>>> layer = nn.Linear(16, 8)
>>> with torch.no_grad(): layer.weight[:, :4] = 0.0
>>> _ = quantize_(layer_holder := nn.Sequential(layer), Clustered(bits=3))
>>> len(torch.unique(layer.weight[layer.weight != 0])) <= 8, bool((layer.weight[:, :4] == 0).all())
(True, True)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..core.config import Interval, NonNegativeInt
from ..core.errors import ConfigError, ModelError
from .api import QUANTIZE, QuantizeConfig, quantize_, quantize_layers, report_bits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clustered(QuantizeConfig):
    """k-means weight sharing with 2^bits shared values per layer (``bits_by_layer`` overrides per layer)."""

    bits: Annotated[int, Interval(1, 8)] = 5
    iters: NonNegativeInt = 30
    init: Literal["linear", "random", "density"] = "linear"
    bits_by_layer: tuple[tuple[str, Annotated[int, Interval(1, 8)]], ...] = ()


def kmeans_1d(values: torch.Tensor, k: int, iters: int = 30, init: str = "linear",
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(centroids (k',), assignment per value) of 1-D k-means; k' <= k when there are fewer distinct values."""
    v = values.detach().float().flatten()
    if v.numel() == 0:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    uniq = torch.unique(v)
    if uniq.numel() <= k:  # already on <= k values: exact, no k-means error
        return uniq, torch.searchsorted(uniq, v)
    if init == "linear":
        c = _linear_init(v, k)
    elif init == "density":  # quantiles of the CDF
        c = torch.quantile(v[torch.randperm(v.numel(), generator=torch.Generator().manual_seed(seed))[:1 << 16]],
                           torch.linspace(0, 1, k))
    else:
        c = v[torch.randperm(v.numel(), generator=torch.Generator().manual_seed(seed))[:k]].sort().values
    for _ in range(iters):
        c = c.sort().values
        assign = torch.bucketize(v, (c[1:] + c[:-1]) / 2)
        sums = torch.zeros(k).index_add_(0, assign, v)
        counts = torch.zeros(k).index_add_(0, assign, torch.ones_like(v))
        new = torch.where(counts > 0, sums / counts.clamp(min=1), c)
        if torch.equal(new, c):
            break
        c = new
    c = c.sort().values
    assign = torch.bucketize(v, (c[1:] + c[:-1]) / 2)
    used = torch.unique(assign)
    remap = torch.full((k,), -1, dtype=torch.long)
    remap[used] = torch.arange(used.numel())
    return c[used], remap[assign]


def _linear_init(v: torch.Tensor, k: int) -> torch.Tensor:
    """Evenly spaced centroids over the occupied range. After pruning the nonzeros sit in two bands
    [min, -t] and [t, max]; spacing over [min, max] would waste the centroids in the empty gap
    (k-means never moves an empty centroid), so each sign's band gets a share of k by its width."""
    neg, pos = v[v < 0], v[v > 0]
    if neg.numel() == 0 or pos.numel() == 0 or k < 4:
        return torch.linspace(float(v.min()), float(v.max()), k)
    wn, wp = float(neg.max() - neg.min()), float(pos.max() - pos.min())
    kn = min(max(1, round(k * wn / max(wn + wp, 1e-30))), k - 1)
    return torch.cat([torch.linspace(float(neg.min()), float(neg.max()), kn),
                      torch.linspace(float(pos.min()), float(pos.max()), k - kn)])


class SharedWeights(nn.Module):
    """Parametrization: the weight is ``centroids[index]`` (0 where ``index`` is -1).

    ``centroids`` is the only trainable tensor; indexing sums the gradients of every weight that
    uses a centroid into it, which is exactly Deep Compression's centroid update."""

    def __init__(self, centroids: torch.Tensor, index: torch.Tensor):
        super().__init__()
        self.centroids = nn.Parameter(centroids.clone())
        self.register_buffer("index", index.to(torch.int64))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        table = torch.cat([self.centroids, self.centroids.new_zeros(1)])  # index -1 -> the appended 0
        return table[self.index]

    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        return w


@QUANTIZE.register(Clustered)
def _cluster(model: nn.Module, config: Clustered, report, *, data=None, example_inputs=None) -> None:
    layers = quantize_layers(model, config, report)
    per_layer = dict(config.bits_by_layer)
    unknown = set(per_layer) - {n for n, _ in layers}
    if unknown:
        raise ConfigError(f"Clustered.bits_by_layer names unknown layers {sorted(unknown)}; "
                          f"layers: {[n for n, _ in layers]}")
    for name, layer in layers:
        if any(isinstance(p, SharedWeights) for p in _params(layer)):
            raise ModelError(f"layer {name!r} is already clustered")
    for name, layer in layers:
        w = layer.weight.detach()
        nz = w != 0
        k = 2 ** per_layer.get(name, config.bits)
        cents, assign = kmeans_1d(w[nz], k, config.iters, config.init)
        index = torch.full(w.shape, -1, dtype=torch.int64)
        index[nz] = assign
        parametrize.register_parametrization(layer, "weight", SharedWeights(cents, index), unsafe=True)
        log.debug("clustered %s into %d centroids", name, cents.numel())
    report_bits(report, layers, {n: per_layer.get(n, config.bits) for n, _ in layers},
                what="{bits}-bit shared weights (k-means)")


def _params(layer: nn.Module) -> list[nn.Module]:
    return list(layer.parametrizations.weight) if parametrize.is_parametrized(layer, "weight") else []


def shared_weights(model: nn.Module) -> dict[str, SharedWeights]:
    """{layer name: its SharedWeights parametrization}."""
    return {n: p for n, m in model.named_modules() for p in _params(m) if isinstance(p, SharedWeights)}


def centroid_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable centroids: pass them to the optimizer for centroid fine-tuning."""
    return [p.centroids for p in shared_weights(model).values()]


def bake_clusters_(model: nn.Module) -> None:
    """Replace every SharedWeights parametrization by the plain weight it computes (values unchanged)."""
    for name, mod in list(model.named_modules()):
        plist = _params(mod)
        if any(isinstance(p, SharedWeights) for p in plist):
            with torch.no_grad():
                w = mod.weight.detach().clone()
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=False)
            with torch.no_grad():
                mod.weight.copy_(w)


__all__ = ["Clustered", "SharedWeights", "bake_clusters_", "centroid_parameters", "kmeans_1d", "quantize_",
           "shared_weights"]
