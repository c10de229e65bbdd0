"""Typed vocabulary of unstructured pruning: scope, granularity and the ``Unstructured`` config.

>>> Unstructured(sparsity=0.9, scope=Global())
Unstructured(include=('*',), exclude=(), sparsity=0.9, criterion=Magnitude(p=1), scope=Global(), granularity=Elementwise())
>>> Unstructured(granularity=NM(2, 4)).target_sparsity
0.5
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..core.config import Config, Fraction, PositiveInt
from ..core.select import Selective
from ..core.errors import ConfigError
from .criteria import Criterion, Magnitude


def geometric(start: float, final: float, t: float) -> float:
    """Sparsity at progress ``t`` in [0, 1] from ``start`` to ``final`` when every equal step removes the same
    fraction of the weights still there (iterative pruning, lottery-ticket rounds, OBS steps)."""
    keep0, keep1 = 1 - start, 1 - final
    return 1 - keep0 * (keep1 / keep0) ** t if keep0 > 0 else 1.0


@dataclass(frozen=True)
class PruneConfig(Selective):
    """Base of the configs ``prune_`` takes (unstructured masks, structured removal, depth)."""

    _abstract = True


class Scope(Config):
    """How scores are compared: within each layer or across all selected layers."""


@dataclass(frozen=True)
class Layerwise(Scope):
    """Every selected layer reaches the target sparsity on its own."""


@dataclass(frozen=True)
class Global(Scope):
    """One threshold over all selected layers: scores are compared across layers."""


class Granularity(Config):
    """What one score decides about: a weight, a unit, or an N:M group."""


@dataclass(frozen=True)
class Elementwise(Granularity):
    """Individual weights."""


@dataclass(frozen=True)
class Neurons(Granularity):
    """Whole output units (rows of a Linear, filters of a conv): a row's score is its mean score; the
    bias of a pruned unit is masked too, so the unit outputs exactly zero before its activation."""


@dataclass(frozen=True)
class NM(Granularity):
    """N:M semi-structured sparsity: keep ``n`` of every ``m`` consecutive weights along the input
    dimension (a Linear's ``in_features``; a conv's flattened ``in * kh * kw``)."""

    n: PositiveInt = 2
    m: PositiveInt = 4

    def validate(self):
        if not self.n < self.m:
            raise ConfigError(f"NM needs integers 0 < n < m, got n={self.n!r}, m={self.m!r} (e.g. NM(2, 4))")

    @property
    def sparsity(self) -> float:
        return 1 - self.n / self.m


@dataclass(frozen=True)
class Unstructured(PruneConfig):
    """Prune individual weights (or neurons, or N:M groups) of the selected layers.

    ``sparsity`` is the fraction of weights removed (not needed for ``NM``, which fixes it); ``include``
    / ``exclude`` are globs over layer names (``"net.*"``, ``"classifier.3"``) or types (``"type:Linear"``)."""

    sparsity: Fraction | None = None
    criterion: Criterion = Magnitude()
    scope: Scope = field(default_factory=Layerwise)
    granularity: Granularity = field(default_factory=Elementwise)

    def validate(self):
        if isinstance(self.granularity, NM):
            if self.sparsity is not None and abs(self.sparsity - self.granularity.sparsity) > 1e-9:
                raise ConfigError(f"sparsity={self.sparsity!r} contradicts {self.granularity} "
                                  f"(which means {self.granularity.sparsity}); leave sparsity unset")
        elif self.sparsity is None:
            raise ConfigError("sparsity is required (a number in [0, 1)), e.g. Unstructured(sparsity=0.9)")

    @property
    def target_sparsity(self) -> float:
        return self.granularity.sparsity if isinstance(self.granularity, NM) else float(self.sparsity)
