"""Schedules: step -> target sparsity. One-shot, iterative rounds, and AGP (Zhu & Gupta 2017) gradual
pruning inside training through a trainer callback.

>>> agp = AGP(final=0.9, begin_step=0, end_step=100, every=10)
>>> [round(agp.target(s), 4) for s in (0, 50, 100, 200)]
[0.0, 0.7875, 0.9, 0.9]
>>> [round(Iterative(final=0.96, rounds=2).target(r), 2) for r in (1, 2)]
[0.8, 0.96]
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ..core.config import Config, Fraction, NonNegativeInt, PositiveInt
from ..core.errors import ConfigError
from ..train import Callback, CallbackConfig, TrainConfig, Trainer, evaluate
from .config import Unstructured, geometric
from .masks import select, set_mask, sparsity
from .unstructured import check_granularity, prune_unstructured

log = logging.getLogger(__name__)


class Schedule(Config):
    """One-method extension point: ``target(step) -> sparsity`` (non-decreasing in step)."""

    def target(self, step: int) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class OneShot(Schedule):
    """Everything at ``at_step``."""

    final: Fraction
    at_step: NonNegativeInt = 0

    def target(self, step: int) -> float:
        return self.final if step >= self.at_step else 0.0


@dataclass(frozen=True)
class Iterative(Schedule):
    """``rounds`` prune/fine-tune rounds, each removing the same fraction of the remaining weights
    ("don't prune too much at once"); ``step`` is the round number, 1..rounds."""

    final: Fraction
    rounds: PositiveInt = 5

    def target(self, step: int) -> float:
        return geometric(0.0, self.final, min(max(step, 0), self.rounds) / self.rounds)


@dataclass(frozen=True)
class AGP(Schedule):
    """Automated gradual pruning: s_t = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3, updated every
    ``every`` steps between ``begin_step`` and ``end_step`` (prunes fast early, gently at the end)."""

    final: Fraction
    end_step: PositiveInt
    initial: Fraction = 0.0
    begin_step: NonNegativeInt = 0
    every: PositiveInt = 100

    def validate(self):
        if self.initial > self.final:
            raise ConfigError(f"AGP.initial ({self.initial}) must not exceed final ({self.final})")
        if not self.begin_step < self.end_step:
            raise ConfigError(f"AGP needs 0 <= begin_step < end_step, got {self.begin_step} and {self.end_step}")

    def target(self, step: int) -> float:
        if step < self.begin_step:
            return 0.0
        # hold the level between updates: quantise t to the last multiple of `every`
        t = min(step, self.end_step)
        t = self.begin_step + ((t - self.begin_step) // self.every) * self.every if t < self.end_step else t
        frac = (t - self.begin_step) / (self.end_step - self.begin_step)
        return self.final + (self.initial - self.final) * (1 - frac) ** 3


@dataclass(frozen=True)
class GradualPrune(CallbackConfig):
    """Fine-tune while pruning: masks tighten along ``schedule`` (e.g. AGP's cubic ramp) with ``config``'s
    criterion, scope and granularity (its sparsity is the schedule's)."""

    config: Unstructured
    schedule: Schedule

    def build(self, model, *, teacher=None, data=None, example_inputs=None):
        return GradualPruning(model, self.config, self.schedule, data=data)


class GradualPruning(Callback):
    """Trainer callback pruning ``model`` along ``schedule`` (e.g. :class:`AGP`) with ``config``'s
    criterion/scope/granularity (its ``sparsity`` is ignored: the schedule sets it).

    Masks of ones are installed at construction, so a fresh model has the parameter names of a
    checkpoint and ``Trainer(..., resume=True)`` can load the masks; the reached level is the
    callback's state.

    >>> from netcompress.models import lenet_300_100
    >>> m = lenet_300_100()
    >>> cb = GradualPruning(m, Unstructured(sparsity=0.0), AGP(final=0.8, end_step=10, every=2))
    >>> for step in range(1, 11): cb.on_step_end(None, step, 0.0)
    >>> round(cb.level, 3)
    0.8
    """

    def __init__(self, model: nn.Module, config: Unstructured, schedule: Schedule, data=None, loss_fn=None):
        if not isinstance(config, Unstructured):
            raise ConfigError(f"config must be an Unstructured config, got {type(config).__name__}")
        if not isinstance(schedule, Schedule):
            raise ConfigError(f"schedule must be a Schedule such as AGP(...), got {schedule!r}")
        self.model, self.config, self.schedule = model, config, schedule
        self.data, self.loss_fn = data, loss_fn
        targets = select(model, config.include, config.exclude)
        check_granularity(targets, config)
        config.criterion.check(data)
        for t in targets:
            if t.mask().all():
                set_mask(t.module, t.param, torch.ones_like(t.original(), dtype=torch.bool))
        self.level = 0.0

    def _maybe_prune(self, step: int) -> None:
        target = self.schedule.target(step)
        if target > self.level + 1e-9:
            prune_unstructured(self.model, self.config, data=self.data, loss_fn=self.loss_fn, sparsity=target)
            self.level = target
            log.info("step %d: pruned to %.4f", step, target)

    def on_fit_start(self, trainer) -> None:
        self._maybe_prune(getattr(trainer, "global_step", 0))

    def on_step_end(self, trainer, step: int, loss: float) -> None:
        self._maybe_prune(step)

    def on_epoch_end(self, trainer, epoch: int, metrics: dict) -> None:
        metrics["sparsity"] = sparsity(self.model)

    def state_dict(self) -> dict:
        return {"level": self.level}

    def load_state_dict(self, state: dict) -> None:
        self.level = float(state["level"])


def iterative_prune(model: nn.Module, config: Unstructured, schedule: Iterative, train_data,
                    fine_tune: TrainConfig, val_data=None, test_data=None, data=None, loss_fn=None,
                    callbacks=()) -> list[dict[str, Any]]:
    """Prune/fine-tune rounds in place: round r prunes to ``schedule.target(r)`` then trains
    ``fine_tune`` (a new optimizer each round). Returns one row per round (sparsity, metrics)."""
    if not isinstance(schedule, Iterative):
        raise ConfigError(f"schedule must be Iterative(final, rounds), got {schedule!r}")
    history = []
    for r in range(1, schedule.rounds + 1):
        s = schedule.target(r)
        prune_unstructured(model, config, data=data, sparsity=s, loss_fn=loss_fn)
        cfg = replace(fine_tune, seed=fine_tune.seed + r)
        Trainer(model, train_data, cfg, val_data=val_data, callbacks=callbacks).fit()
        row = {"round": r, "sparsity": sparsity(model)}
        if test_data is not None:
            row.update({f"test_{k}": v for k, v in evaluate(model, test_data).items()})
        history.append(row)
        log.info("round %d/%d: %s", r, schedule.rounds, row)
    return history
