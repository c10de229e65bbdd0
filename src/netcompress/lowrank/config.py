"""Typed configs of low-rank factorization: how each selected layer's rank is chosen.

A layer is a matrix ``W`` of shape (out, d) acting on input vectors of size d: a Linear's input, or a
conv's ``in/groups * kh * kw`` patch. Rank r replaces it by two thinner layers holding r*(out + d)
weights instead of out*d, so the cost ratio is r*(out + d) / (out*d) (seed 004), and a layer is only
factored when that ratio is below 1 - ``min_saving``.

>>> SVD(keep=0.5)
SVD(include=('*',), exclude=(), min_saving=0.0, rank=None, energy=None, keep=0.5, data_aware=False, samples=1024)
>>> Tucker2(keep=0.3).keep
0.3
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from ..core.config import Fraction, Interval, PositiveInt, Share
from ..core.errors import ConfigError
from ..core.select import Selective

Keep = Annotated[float, Interval(0, 1, "()")]


@dataclass(frozen=True)
class DecomposeConfig(Selective):
    """Base of the configs ``decompose_`` takes: the layers (``include`` / ``exclude``) and ``min_saving``,
    the least fraction of a layer's weights a replacement must save to be made."""

    _abstract = True
    min_saving: Fraction = 0.0


@dataclass(frozen=True)
class _RankChoice(DecomposeConfig):
    _abstract = True

    def validate(self):
        given = [n for n in ("rank", "energy", "keep") if getattr(self, n) is not None]
        if len(given) != 1:
            who = type(self).__name__
            raise ConfigError(f"{who} needs exactly one of rank=, energy= or keep= (got {given or 'none'}); "
                              f"e.g. {who}(keep=0.5) keeps half of each layer's weights")


@dataclass(frozen=True)
class SVD(_RankChoice):
    """Truncated SVD of each layer's (out, d) matrix: Linear -> Linear(d, r) + Linear(r, out); Conv2d ->
    Conv2d(in, r, k) + 1x1 Conv2d(r, out) (the "channel" decomposition of Zhang et al. 2015).

    ``energy``: the fraction of sum(s^2) kept; ``keep``: the fraction of the layer's weights kept.
    ``data_aware``: minimise the error of the layer's *outputs* on ``data`` (||W x - W' x|| over the
    layer's real inputs, as in Masana et al. 2017) rather than of its weights; needs ``data``."""

    rank: PositiveInt | None = None
    energy: Share | None = None
    keep: Keep | None = None
    data_aware: bool = False
    samples: PositiveInt = 1024


@dataclass(frozen=True)
class Tucker2(_RankChoice):
    """Tucker-2 of each conv kernel over its output and input channel modes (Kim et al. 2015):
    Conv2d(in, out, k) -> 1x1 Conv2d(in, r_in) + Conv2d(r_in, r_out, k) + 1x1 Conv2d(r_out, out).
    ``rank`` is (r_in, r_out) or one int for both; ``energy`` applies to each mode's singular values;
    ``keep`` scales both ranks by the same fraction of their channels so the weights kept are
    about that fraction. Linear layers are left alone (use SVD for them)."""

    rank: PositiveInt | tuple[PositiveInt, PositiveInt] | None = None
    energy: Share | None = None
    keep: Keep | None = None

    def validate(self):
        super().validate()
        if isinstance(self.rank, int):
            object.__setattr__(self, "rank", (self.rank, self.rank))
