"""Typed configs of low-rank factorization: how each selected layer's rank is chosen.

A layer is a matrix ``W`` of shape (out, d) acting on input vectors of size d: a Linear's input, or a
conv's ``in/groups * kh * kw`` patch. Rank r replaces it by two thinner layers holding r*(out + d)
weights instead of out*d, so the cost ratio is r*(out + d) / (out*d) (seed 004), and a layer is only
factored when that ratio is below 1 - ``min_saving``.

>>> SVD(keep=0.5)
SVD(rank=None, energy=None, keep=0.5, data_aware=False, samples=1024, include=('*',), exclude=(), min_saving=0.0)
>>> Tucker2(keep=0.3).keep
0.3
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import ConfigError


def _check_rank_choice(who: str, rank, energy, keep) -> None:
    given = [n for n, v in (("rank", rank), ("energy", energy), ("keep", keep)) if v is not None]
    if len(given) != 1:
        raise ConfigError(f"{who} needs exactly one of rank=, energy= or keep= (got {given or 'none'}); "
                          f"e.g. {who}(keep=0.5) keeps half of each layer's weights")
    if energy is not None and (isinstance(energy, bool) or not isinstance(energy, (int, float))
                               or not 0 < energy <= 1):
        raise ConfigError(f"{who}.energy must be a number in (0, 1] (fraction of sum(s^2) kept); got {energy!r}")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep < 1):
        raise ConfigError(f"{who}.keep must be a number in (0, 1) (fraction of the layer's weights kept); "
                          f"got {keep!r}")


def _check_common(who: str, include, exclude, min_saving) -> None:
    for name, value in (("include", include), ("exclude", exclude)):
        if isinstance(value, str) or not isinstance(value, (tuple, list)) or not all(isinstance(p, str) for p in value):
            raise ConfigError(f"{who}.{name} must be a tuple of layer-name globs, e.g. ('features.*',); "
                              f"got {value!r}")
    if isinstance(min_saving, bool) or not isinstance(min_saving, (int, float)) or not 0 <= min_saving < 1:
        raise ConfigError(f"{who}.min_saving must be a number in [0, 1); got {min_saving!r}")


@dataclass(frozen=True)
class SVD:
    """Truncated SVD of each layer's (out, d) matrix: Linear -> Linear(d, r) + Linear(r, out); Conv2d ->
    Conv2d(in, r, k) + 1x1 Conv2d(r, out) (the "channel" decomposition of Zhang et al. 2015).

    ``data_aware``: minimise the error of the layer's *outputs* on ``data`` (||W x - W' x|| over the
    layer's real inputs, as in Masana et al. 2017) rather than of its weights; needs ``data``."""

    rank: int | None = None
    energy: float | None = None
    keep: float | None = None
    data_aware: bool = False
    samples: int = 1024
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    min_saving: float = 0.0

    def __post_init__(self):
        _check_rank_choice("SVD", self.rank, self.energy, self.keep)
        if self.rank is not None and (not isinstance(self.rank, int) or isinstance(self.rank, bool)
                                      or self.rank < 1):
            raise ConfigError(f"SVD.rank must be an integer >= 1; got {self.rank!r}")
        if not isinstance(self.data_aware, bool):
            raise ConfigError(f"SVD.data_aware must be True or False; got {self.data_aware!r}")
        if not isinstance(self.samples, int) or isinstance(self.samples, bool) or self.samples < 1:
            raise ConfigError(f"SVD.samples must be an integer >= 1; got {self.samples!r}")
        _check_common("SVD", self.include, self.exclude, self.min_saving)
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))


@dataclass(frozen=True)
class Tucker2:
    """Tucker-2 of each conv kernel over its output and input channel modes (Kim et al. 2015):
    Conv2d(in, out, k) -> 1x1 Conv2d(in, r_in) + Conv2d(r_in, r_out, k) + 1x1 Conv2d(r_out, out).
    ``rank`` is (r_in, r_out) or one int for both; ``energy`` applies to each mode's singular values;
    ``keep`` scales both ranks by the same fraction of their channels so the weights kept are
    about that fraction. Linear layers are left alone (use SVD for them)."""

    rank: int | tuple[int, int] | None = None
    energy: float | None = None
    keep: float | None = None
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    min_saving: float = 0.0

    def __post_init__(self):
        _check_rank_choice("Tucker2", self.rank, self.energy, self.keep)
        if self.rank is not None:
            ranks = (self.rank, self.rank) if isinstance(self.rank, int) else tuple(self.rank)
            if len(ranks) != 2 or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks):
                raise ConfigError(f"Tucker2.rank must be an integer >= 1 or a pair (r_in, r_out); got {self.rank!r}")
            object.__setattr__(self, "rank", ranks)
        _check_common("Tucker2", self.include, self.exclude, self.min_saving)
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))
