"""Lottery tickets (Frankle & Carbin 2019): iterative magnitude pruning with rewinding, and the control.

Round r trains, prunes ``per_round`` of the remaining weights by global magnitude (masks only shrink),
then rewinds the surviving weights to their values at initialisation (``rewind_epoch=0``) or at the end
of epoch k (late rewinding, Frankle et al. 2020). The last ticket is trained once more. The control
keeps the ticket's mask but draws fresh random initial weights (:func:`random_reinit`)."""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ..core.config import Fraction, NonNegativeInt, PositiveInt
from ..core.data import check_data
from ..core.errors import ConfigError
from ..train import Callback, TrainConfig, Trainer, evaluate
from .api import PRUNE
from .config import Global, PruneConfig, Scope, Unstructured, geometric
from .criteria import Magnitude
from .masks import bake_, masked_targets, select, set_mask, sparsity
from .sparse import plain_state_dict
from .unstructured import prune_unstructured

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LotteryTicket(PruneConfig):
    """Reach ``final`` sparsity in ``rounds`` rounds (each removes the same fraction of what is left), training
    with ``train`` in every round. Through ``prune_`` (or a recipe's prune stage) ``data`` is the training data
    and ``train`` is required; :func:`find_ticket` takes them as arguments."""

    trains = True  # a recipe stage hands it the whole training split, not a calibration sample
    final: Fraction = 0.9
    rounds: PositiveInt = 5
    rewind_epoch: NonNegativeInt = 0
    scope: Scope = field(default_factory=Global)
    train: TrainConfig | None = None

    def target(self, r: int) -> float:
        return geometric(0.0, self.final, r / self.rounds)


class _Snapshot(Callback):
    """Keeps a copy of the (plain) weights at the end of epoch ``k`` (1-based; the trainer counts from 0)."""

    def __init__(self, model: nn.Module, k: int):
        self.model, self.k, self.state = model, k, None

    def on_epoch_end(self, trainer, epoch: int, metrics: dict) -> None:
        if epoch + 1 == self.k:
            self.state = {n: v.clone() for n, v in plain_state_dict(self.model).items()}


def rewind_(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load plain-named weights ``state`` into a (masked) model, keeping its masks."""
    masked = {t.fqn: t for t in masked_targets(model)}
    with torch.no_grad():
        for name, value in state.items():
            if name in masked:
                t = masked[name]
                t.original().copy_(value * t.mask())
            else:
                owner, _, attr = name.rpartition(".")
                mod = model.get_submodule(owner) if owner else model
                getattr(mod, attr).copy_(value)


def find_ticket(model: nn.Module, train_data, train: TrainConfig, lottery: LotteryTicket = LotteryTicket(),
                val_data=None, test_data=None) -> tuple[nn.Module, list[dict[str, Any]], dict]:
    """Run IMP with rewinding on ``model`` in place. Returns (model, history, rewind_state): the model
    is the trained final ticket (masked); ``rewind_state`` holds the weights it was rewound to."""
    if lottery.rewind_epoch > train.epochs:
        raise ConfigError(f"rewind_epoch {lottery.rewind_epoch} is beyond the {train.epochs} training epochs")
    config = Unstructured(sparsity=0.0, criterion=Magnitude(), scope=lottery.scope,
                          include=lottery.include, exclude=lottery.exclude)
    select(model, config.include, config.exclude)
    rewind_state = {n: v.clone() for n, v in plain_state_dict(model).items()}
    history = []
    for r in range(lottery.rounds + 1):
        snap = _Snapshot(model, lottery.rewind_epoch) if r == 0 and lottery.rewind_epoch else None
        Trainer(model, train_data, replace(train, seed=train.seed + r), val_data=val_data,
                callbacks=[snap] if snap else []).fit()
        if snap is not None:
            rewind_state = snap.state
        row = {"round": r, "sparsity": sparsity(model) if r else 0.0}
        if test_data is not None:
            row["test_accuracy"] = evaluate(model, test_data)["accuracy"]
        history.append(row)
        log.info("lottery round %d: %s", r, row)
        if r == lottery.rounds:
            break
        prune_unstructured(model, config, sparsity=lottery.target(r + 1))
        rewind_(model, rewind_state)
    return model, history, rewind_state


def random_reinit(ticket: nn.Module, seed: int = 0) -> nn.Module:
    """The control: a copy of ``ticket`` with the same masks and freshly drawn initial weights."""
    masks = {t.fqn: t.mask().clone() for t in masked_targets(ticket)}
    control = bake_(copy.deepcopy(ticket))
    torch.manual_seed(seed)
    for mod in control.modules():
        if hasattr(mod, "reset_parameters"):
            mod.reset_parameters()
    for fqn, mask in masks.items():
        owner, _, attr = fqn.rpartition(".")
        set_mask(control.get_submodule(owner) if owner else control, attr, mask)
    return control


@PRUNE.register(LotteryTicket)
def _lottery(model: nn.Module, config: LotteryTicket, report, *, data=None, example_inputs=None, loss_fn=None):
    if config.train is None:
        raise ConfigError("LotteryTicket through prune_ needs train= (the TrainConfig of every round), e.g. "
                          "LotteryTicket(final=0.9, train=TrainConfig(epochs=3))")
    check_data(data, "LotteryTicket")
    targets = select(model, config.include, config.exclude, who="LotteryTicket", report=report)
    _, history, _ = find_ticket(model, data, config.train, config)
    for t in targets:
        kept, total = int(t.mask().sum()), t.original().numel()
        report.change(t.name, t.module, f"{1 - kept / total:.1%} of {t.param} masked (lottery ticket)",
                      {"nonzero": total, "numel": total}, {"nonzero": kept, "numel": total})
    report.details["history"] = history


__all__ = ["LotteryTicket", "find_ticket", "random_reinit", "rewind_"]
