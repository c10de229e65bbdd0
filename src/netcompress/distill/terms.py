"""Distillation terms as frozen, validated configs. A ``Distiller`` sums any combination of them.

>>> KD(temperature=4.0, alpha=0.9, beta=0.1)
KD(temperature=4.0, alpha=0.9, beta=0.1)
>>> AttentionTransfer(pairs=[("layer1", "layer1"), ("layer2", "layer2")]).pairs
(('layer1', 'layer1'), ('layer2', 'layer2'))
>>> KD(temperature=0)
Traceback (most recent call last):
...
netcompress.core.errors.ConfigError: KD.temperature must be a finite number > 0 (1 = plain softmax, Hinton used 2-20); got 0
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..core.errors import ConfigError
from .losses import check_temperature

__all__ = ["KD", "LogitRegression", "Hint", "AttentionTransfer", "FSP", "Term"]


def _weight(obj: Any, field: str) -> None:
    value = getattr(obj, field)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{type(obj).__name__}.{field} must be a finite number >= 0; got {value!r}")
    object.__setattr__(obj, field, float(value))


def _layer(obj: Any, field: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{type(obj).__name__}.{field} must be a layer name such as 'layer2' "
                          f"(see netcompress.distill.layer_names(model)); got {value!r}")
    return value


def _pairs(obj: Any, nested: bool) -> None:
    """Normalise ``pairs`` to tuples (so the frozen config hashes) and check every name."""
    raw = obj.pairs
    if isinstance(raw, (str, bytes)) or not hasattr(raw, "__iter__"):
        raise ConfigError(f"{type(obj).__name__}.pairs must be a list of (student, teacher) entries; got {raw!r}")
    out = []
    for entry in raw:
        if not isinstance(entry, (tuple, list)) or len(entry) != 2:
            shape = "((student_a, student_b), (teacher_a, teacher_b))" if nested else "(student_layer, teacher_layer)"
            raise ConfigError(f"{type(obj).__name__}.pairs entries must be {shape}; got {entry!r}")
        if nested:
            sides = []
            for side in entry:
                if not isinstance(side, (tuple, list)) or len(side) != 2:
                    raise ConfigError(f"FSP.pairs: each side must be two layer names (a, b) whose "
                                      f"outputs have the same spatial size; got {side!r}")
                sides.append(tuple(_layer(obj, "pairs", n) for n in side))
            out.append(tuple(sides))
        else:
            out.append(tuple(_layer(obj, "pairs", n) for n in entry))
    if not out:
        raise ConfigError(f"{type(obj).__name__}.pairs is empty; give at least one layer pair")
    object.__setattr__(obj, "pairs", tuple(out))


@dataclass(frozen=True)
class KD:
    """Hinton KD: ``alpha * T^2 * KL(teacher_T || student_T) + beta * task_loss``.

    ``beta`` weights the trainer's own loss (cross-entropy on hard labels by default)."""

    temperature: float = 4.0
    alpha: float = 0.9
    beta: float = 0.1

    def __post_init__(self):
        try:
            object.__setattr__(self, "temperature", check_temperature(self.temperature))
        except ConfigError as exc:
            raise ConfigError(f"KD.{exc}") from None
        _weight(self, "alpha")
        _weight(self, "beta")


@dataclass(frozen=True)
class LogitRegression:
    """Ba & Caruana's mimic loss: L2 between student and teacher logits, times ``weight``."""

    weight: float = 1.0

    def __post_init__(self):
        _weight(self, "weight")


@dataclass(frozen=True)
class Hint:
    """FitNet hint: an adapter (1x1 conv or linear) maps the student's guided layer to the teacher's
    hint layer; MSE between them, times ``weight``. With ``adapter=False`` the shapes must match."""

    student: str
    teacher: str
    weight: float = 1.0
    adapter: bool = True

    def __post_init__(self):
        _layer(self, "student", self.student)
        _layer(self, "teacher", self.teacher)
        _weight(self, "weight")
        if not isinstance(self.adapter, bool):
            raise ConfigError(f"Hint.adapter must be True or False; got {self.adapter!r}")


@dataclass(frozen=True)
class AttentionTransfer:
    """Attention transfer at (student_layer, teacher_layer) pairs: ``weight`` times the sum over pairs
    of the mean squared difference of normalised |A|^p maps. 500 = beta/2 with the paper's beta=1000."""

    pairs: tuple = ()
    weight: float = 500.0
    p: float = 2.0

    def __post_init__(self):
        _pairs(self, nested=False)
        _weight(self, "weight")
        if isinstance(self.p, bool) or not isinstance(self.p, (int, float)) or not self.p > 0:
            raise ConfigError(f"AttentionTransfer.p must be a number > 0 (the paper uses 2); got {self.p!r}")


@dataclass(frozen=True)
class FSP:
    """FSP (Yim et al. 2017): ``pairs`` of ((student_a, student_b), (teacher_a, teacher_b)); the flow
    (Gram) matrix of each layer pair is matched by mean squared error, summed over pairs, times ``weight``."""

    pairs: tuple = ()
    weight: float = 1.0

    def __post_init__(self):
        _pairs(self, nested=True)
        _weight(self, "weight")


Term = (KD, LogitRegression, Hint, AttentionTransfer, FSP)


def student_layers(term) -> list[str]:
    if isinstance(term, Hint):
        return [term.student]
    if isinstance(term, AttentionTransfer):
        return [s for s, _ in term.pairs]
    if isinstance(term, FSP):
        return [n for s, _ in term.pairs for n in s]
    return []


def teacher_layers(term) -> list[str]:
    if isinstance(term, Hint):
        return [term.teacher]
    if isinstance(term, AttentionTransfer):
        return [t for _, t in term.pairs]
    if isinstance(term, FSP):
        return [n for _, t in term.pairs for n in t]
    return []
