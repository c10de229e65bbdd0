"""Typed vocabulary of unstructured pruning: scope, granularity and the ``Unstructured`` config.

>>> Unstructured(sparsity=0.9, scope=Global())
Unstructured(sparsity=0.9, criterion=Magnitude(p=1), scope=Global(), granularity=Elementwise(), include=('*',), exclude=())
>>> Unstructured(granularity=NM(2, 4)).target_sparsity
0.5
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..core.errors import ConfigError
from .criteria import Criterion, Magnitude


@dataclass(frozen=True)
class Layerwise:
    """Every selected layer reaches the target sparsity on its own."""


@dataclass(frozen=True)
class Global:
    """One threshold over all selected layers: scores are compared across layers."""


@dataclass(frozen=True)
class Elementwise:
    """Individual weights."""


@dataclass(frozen=True)
class Neurons:
    """Whole output units (rows of a Linear, filters of a conv): a row's score is its mean score; the
    bias of a pruned unit is masked too, so the unit outputs exactly zero before its activation."""


@dataclass(frozen=True)
class NM:
    """N:M semi-structured sparsity: keep ``n`` of every ``m`` consecutive weights along the input
    dimension (a Linear's ``in_features``; a conv's flattened ``in * kh * kw``)."""

    n: int = 2
    m: int = 4

    def __post_init__(self):
        if not (isinstance(self.m, int) and isinstance(self.n, int) and 0 < self.n < self.m):
            raise ConfigError(f"NM needs integers 0 < n < m, got n={self.n!r}, m={self.m!r} (e.g. NM(2, 4))")

    @property
    def sparsity(self) -> float:
        return 1 - self.n / self.m


SCOPES = (Layerwise, Global)
GRANULARITIES = (Elementwise, Neurons, NM)


def check_sparsity(value, field_name: str = "sparsity") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{field_name} must be a number in [0, 1), got {value!r} "
                          "(0.9 keeps 10% of the weights)")


@dataclass(frozen=True)
class Unstructured:
    """Prune individual weights (or neurons, or N:M groups) of the selected layers.

    ``sparsity`` is the fraction of weights removed (not needed for ``NM``, which fixes it); ``include``
    / ``exclude`` are fnmatch globs over layer names (``"net.*"``, ``"classifier.3"``)."""

    sparsity: float | None = None
    criterion: Criterion = Magnitude()
    scope: Layerwise | Global = field(default_factory=Layerwise)
    granularity: Elementwise | Neurons | NM = field(default_factory=Elementwise)
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,))
            elif not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{name} must be layer-name globs (strings), got {value!r}")
            else:
                object.__setattr__(self, name, tuple(value))
        if not isinstance(self.criterion, Criterion):
            raise ConfigError(f"criterion must be a Criterion such as Magnitude(), OBS(), SNIP(), "
                              f"got {self.criterion!r}")
        if not isinstance(self.scope, SCOPES):
            raise ConfigError(f"scope must be Layerwise() or Global(), got {self.scope!r}")
        if not isinstance(self.granularity, GRANULARITIES):
            raise ConfigError(f"granularity must be Elementwise(), Neurons() or NM(n, m), got {self.granularity!r}")
        if isinstance(self.granularity, NM):
            if self.sparsity is not None and abs(self.sparsity - self.granularity.sparsity) > 1e-9:
                raise ConfigError(f"sparsity={self.sparsity!r} contradicts {self.granularity} "
                                  f"(which means {self.granularity.sparsity}); leave sparsity unset")
        elif self.sparsity is None:
            raise ConfigError("sparsity is required (a number in [0, 1)), e.g. Unstructured(sparsity=0.9)")
        else:
            check_sparsity(self.sparsity)

    @property
    def target_sparsity(self) -> float:
        return self.granularity.sparsity if isinstance(self.granularity, NM) else float(self.sparsity)
