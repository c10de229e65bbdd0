"""Channel importance: one method, ``__call__(model, group) -> (units,) scores`` (higher = keep).

Scores see the group's members (module, role, positions per unit), so every coupled layer can vote;
criteria that need data (Taylor) gather it in ``prepare`` first.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...core.config import Config, PositiveInt
from ...core.data import iter_batches, forward
from ...core.errors import ConfigError, DataError

log = logging.getLogger(__name__)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _out_rows(mod: nn.Module, role: str) -> torch.Tensor:
    """(C, -1) weight of the channels this member is indexed by."""
    w = mod.weight.detach()
    if isinstance(mod, _CONVT) and role == "out":
        w = w.transpose(0, 1)
    return w.reshape(w.shape[0], -1)


def _per_unit(values: torch.Tensor, positions: list[np.ndarray]) -> np.ndarray:
    v = values.double().cpu().numpy()
    return np.array([v[p].sum() if len(p) else 0.0 for p in positions])


def _producers(model: nn.Module, group) -> list[tuple[nn.Module, str, list[np.ndarray]]]:
    mods = dict(model.named_modules())
    out = [(mods[m], r, p) for m, r, p in group.members
           if r == "out" or (r == "channel" and not isinstance(mods[m], (*_BN, nn.LayerNorm)))]
    return out


class Importance(Config):
    """Base: subclasses implement ``__call__``; ``comparable`` says whether raw scores can be ranked
    across layers (Global scope normalises them per group otherwise)."""

    comparable = False

    def prepare(self, model: nn.Module, graph, data=None, loss_fn=None) -> "Importance":
        """The scorer to use on this model: ``self``, or a copy holding gathered statistics (gradients)."""
        return self

    def __call__(self, model: nn.Module, group) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class L1(Importance):
    """Sum of |w| of the filters producing each channel (Li et al. 2017)."""

    def __call__(self, model, group):
        return sum(_per_unit(_out_rows(m, r).abs().sum(1), p) for m, r, p in _producers(model, group))


@dataclass(frozen=True)
class L2(Importance):
    """L2 norm of the filters producing each channel."""

    def __call__(self, model, group):
        return np.sqrt(sum(_per_unit(_out_rows(m, r).pow(2).sum(1), p) for m, r, p in _producers(model, group)))


@dataclass(frozen=True)
class BNScale(Importance):
    """|gamma| of the BatchNorms normalising each channel (network slimming, Liu et al. 2017).

    Groups without a BatchNorm are never pruned by this criterion (their scores are +inf)."""

    comparable = True

    def __call__(self, model, group):
        mods = dict(model.named_modules())
        bns = [(mods[m], p) for m, r, p in group.members if r == "channel" and isinstance(mods[m], _BN)]
        if not bns:
            return np.full(len(group), np.inf)
        return sum(_per_unit(bn.weight.detach().abs(), p) for bn, p in bns) / len(bns)


@dataclass(frozen=True)
class Random(Importance):
    """Uniform random scores: the control every criterion must beat."""

    seed: int = 0

    def __call__(self, model, group):
        return np.random.default_rng((self.seed, group.index)).random(len(group))


@dataclass(frozen=True)
class Taylor(Importance):
    """First-order Taylor (Molchanov et al. 2019): (sum over a channel's weights of g * w)^2, averaged over
    ``batches`` mini-batches of ``data`` -- the loss change if the channel were removed."""

    batches: PositiveInt = 8
    batch_size: PositiveInt = 64

    def prepare(self, model, graph, data=None, loss_fn=None) -> "Precomputed":
        if data is None:
            raise DataError("Taylor importance needs data=: a dataset of (inputs, targets) to take gradients on")
        loss_fn = loss_fn or (lambda out, y, x: F.cross_entropy(out, y))
        mods = dict(model.named_modules())
        params = {name: mod.weight for name, mod in mods.items() if getattr(mod, "weight", None) is not None}
        saved = {n: (p.grad, p.requires_grad) for n, p in params.items()}
        sums = {n: torch.zeros(p.shape[1] if isinstance(mods[n], _CONVT) else p.shape[0], dtype=torch.float64)
                for n, p in params.items()}
        was_training = model.training
        model.eval()  # running statistics must not move while we score
        scores: dict[tuple[int, int], np.ndarray] = {}
        try:
            for x, y in iter_batches(data, batch_size=self.batch_size, max_batches=self.batches, shuffle=True):
                for p in params.values():
                    p.grad = None
                    p.requires_grad_(True)
                loss_fn(forward(model, x), y, x).backward()
                for n, p in params.items():  # per channel sum of g * w
                    gw = (p.grad * p.detach()) if p.grad is not None else torch.zeros_like(p)
                    if isinstance(mods[n], _CONVT):
                        gw = gw.transpose(0, 1)
                    sums[n] = gw.reshape(gw.shape[0], -1).sum(1).double()
                for grp in graph.groups:  # squared per unit per batch, then averaged
                    s = np.zeros(len(grp))
                    for m, r, pos in grp.members:
                        if r != "in" and m in sums:
                            s += _per_unit(sums[m], pos)
                    scores[grp.index] = scores.get(grp.index, 0) + s ** 2
        finally:
            for n, p in params.items():
                p.grad, rg = saved[n]
                p.requires_grad_(rg)
            model.train(was_training)
        return Precomputed(scores, comparable=False)

    def __call__(self, model, group):
        raise ConfigError("Taylor importance needs gradients: use the scorer returned by "
                          "prepare(model, graph, data) (prune_ does this when given data=)")


class Precomputed(Importance):
    """Scores gathered beforehand, keyed by group index (Taylor statistics, learned gates)."""

    def __init__(self, scores: dict[int, np.ndarray], comparable: bool):
        self.scores, self.comparable = scores, comparable

    def __call__(self, model, group):
        return np.asarray(self.scores[group.index], dtype=np.float64)
