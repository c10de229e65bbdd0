"""Distillation terms as frozen, validated configs. A ``Distiller`` sums any combination of them.

>>> KD(temperature=4.0, alpha=0.9, beta=0.1)
KD(temperature=4.0, alpha=0.9, beta=0.1)
>>> AttentionTransfer(pairs=[("layer1", "layer1"), ("layer2", "layer2")]).pairs
(('layer1', 'layer1'), ('layer2', 'layer2'))
>>> KD(temperature=0)
Traceback (most recent call last):
...
netcompress.core.errors.ConfigError: KD.temperature must be a number > 0; got 0
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.config import Config, NonNegativeFloat, PositiveFloat
from ..core.errors import ConfigError
from ..train.callbacks import CallbackConfig

__all__ = ["KD", "LogitRegression", "Hint", "AttentionTransfer", "FSP", "Term", "Distill"]

Pair = tuple[str, str]


def _names(owner: Config, names) -> None:
    for n in names:
        if not n:
            raise ConfigError(f"{type(owner).__name__}: layer names must not be empty (see "
                              "netcompress.distill.layer_names(model))")


class Term(Config):
    """Base of the distillation terms a :class:`~netcompress.distill.Distiller` sums."""


@dataclass(frozen=True)
class KD(Term):
    """Hinton KD: ``alpha * T^2 * KL(teacher_T || student_T) + beta * task_loss``.

    ``beta`` weights the trainer's own loss (cross-entropy on hard labels by default). The T^2 factor
    keeps gradients CE-sized only once the student's logits are near the teacher's; far from it (early
    training) the soft-term gradient is up to T times larger, so high T (e.g. 20) may need a lower lr
    or ``grad_clip`` (a 30-30 MLP at lr 0.05 collapsed to chance at T=20 in benchmarks/distill_hinton).
    ``temperature`` 1 is the plain softmax; Hinton used 2-20."""

    temperature: PositiveFloat = 4.0
    alpha: NonNegativeFloat = 0.9
    beta: NonNegativeFloat = 0.1


@dataclass(frozen=True)
class LogitRegression(Term):
    """Ba & Caruana's mimic loss: L2 between student and teacher logits, times ``weight``."""

    weight: NonNegativeFloat = 1.0


@dataclass(frozen=True)
class Hint(Term):
    """FitNet hint: an adapter (1x1 conv or linear) maps the student's guided layer to the teacher's
    hint layer; MSE between them, times ``weight``. With ``adapter=False`` the shapes must match."""

    student: str
    teacher: str
    weight: NonNegativeFloat = 1.0
    adapter: bool = True

    def validate(self):
        _names(self, (self.student, self.teacher))


@dataclass(frozen=True)
class AttentionTransfer(Term):
    """Attention transfer at (student_layer, teacher_layer) pairs: ``weight`` times the sum over pairs
    of the mean squared difference of normalised |A|^p maps. 500 = beta/2 with the paper's beta=1000."""

    pairs: tuple[Pair, ...] = ()
    weight: NonNegativeFloat = 500.0
    p: PositiveFloat = 2.0

    def validate(self):
        if not self.pairs:
            raise ConfigError("AttentionTransfer.pairs is empty; give at least one (student_layer, teacher_layer)")
        _names(self, [n for pair in self.pairs for n in pair])


@dataclass(frozen=True)
class FSP(Term):
    """FSP (Yim et al. 2017): ``pairs`` of ((student_a, student_b), (teacher_a, teacher_b)); the flow
    (Gram) matrix of each layer pair is matched by mean squared error, summed over pairs, times ``weight``.
    Both layers of a side must have outputs of the same spatial size."""

    pairs: tuple[tuple[Pair, Pair], ...] = ()
    weight: NonNegativeFloat = 1.0

    def validate(self):
        if not self.pairs:
            raise ConfigError("FSP.pairs is empty; give at least one ((student_a, student_b), (teacher_a, teacher_b))")
        _names(self, [n for pair in self.pairs for side in pair for n in side])


@dataclass(frozen=True)
class Distill(CallbackConfig):
    """Fine-tune with distillation from a teacher (in a recipe: the run's baseline): the sum of ``terms``;
    ``task_weight`` weights the trainer's own loss when no KD term sets it (KD's ``beta`` does);
    ``cache`` keeps the teacher's logits of each sample instead of re-running it."""

    terms: tuple[Term, ...] = (KD(),)
    task_weight: NonNegativeFloat | None = None
    cache: bool = False

    def validate(self):
        if not self.terms:
            raise ConfigError("Distill.terms is empty; give at least one term, e.g. [{type: KD}]")

    def build(self, model, *, teacher=None, data=None, example_inputs=None):
        from .distiller import Distiller

        if teacher is None:
            raise ConfigError("Distill needs a teacher model")
        return Distiller(teacher(), model, list(self.terms), task_weight=self.task_weight,
                         example_input=example_inputs, cache=self.cache)


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
