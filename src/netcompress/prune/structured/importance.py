"""Channel scores from the one scoring protocol: a group's channel unit scores ``criterion.reduce`` of its
per-weight scores summed over each voting layer's slices (``criterion.votes``), so every criterion -- L1,
L2, BNScale, Taylor, Random, and Magnitude, SNIP, OBD, OBS... -- ranks channels as it ranks weights.
Learned gates score channel units directly (:class:`Precomputed`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...core.errors import ConfigError
from ...graph import handler_for
from ..criteria import BNScale, Criterion, L1, L2, Random, Taylor
from ..masks import Target

__all__ = ["BNScale", "Importance", "L1", "L2", "Precomputed", "Random", "Taylor", "group_scores"]

#: what ``ChannelPruning(importance=...)`` takes: any criterion
Importance = Criterion


class Precomputed(Criterion):
    """Scores gathered beforehand, one per channel unit, keyed by group index (learned gates)."""

    def __init__(self, scores: dict[int, np.ndarray], comparable: bool):
        self.unit_scores, self.comparable = scores, comparable

    def scores(self, model, targets, data=None, loss_fn=None):
        raise ConfigError("precomputed channel scores rank channels, not weights; use them with ChannelPruning")


def _unit_sums(score: torch.Tensor, ndim: int, dim: int, positions: list[np.ndarray]) -> torch.Tensor:
    """(*lead, units): ``score`` (``*lead`` per-batch dims, then the weight's ``ndim`` dims) summed over each
    unit's slices along weight dim ``dim``."""
    lead = score.dim() - ndim
    per_channel = score.movedim(lead + dim, lead)
    per_channel = per_channel.reshape(*per_channel.shape[:lead + 1], -1).sum(-1).double()  # (*lead, C)
    unit = torch.as_tensor(np.repeat(np.arange(len(positions)), [len(p) for p in positions]))
    index = torch.as_tensor(np.concatenate(positions).astype(np.int64))
    out = per_channel.new_zeros(*per_channel.shape[:lead], len(positions))
    return out.index_add_(lead, unit, per_channel.index_select(lead, index))


def group_scores(model: nn.Module, graph, criterion: Criterion, data=None, loss_fn=None) -> list[np.ndarray]:
    """Per group of ``graph``, one score per channel unit (higher = keep); +inf where no layer votes."""
    if isinstance(criterion, Precomputed):
        out = [np.asarray(criterion.unit_scores[grp.index], dtype=np.float64).reshape(-1) for grp in graph.groups]
    else:
        criterion.check(data)
        mods = dict(model.named_modules())
        targets: dict[tuple[str, str], Target] = {}
        voters = []  # per group: (target key, weight dim, positions per unit)
        for grp in graph.groups:
            mine = []
            for name, role, positions in grp.members:
                mod, handler = mods[name], handler_for(mods[name])
                attr, dim = handler.slots(mod, role)[0]  # the weight
                if isinstance(getattr(mod, attr, None), nn.Parameter) and criterion.votes(mod, role, handler.follows):
                    mine.append(((name, attr), dim, positions))
                    targets.setdefault((name, attr), Target(name, mod, attr))
            voters.append(mine)
        keys = list(targets)
        scores = dict(zip(keys, criterion.scores(model, [targets[k] for k in keys], data, loss_fn)))
        out = []
        for grp, mine in zip(graph.groups, voters):
            parts = [_unit_sums(scores[k], targets[k].original().dim(), dim, pos) for k, dim, pos in mine]
            out.append(criterion.reduce(parts).cpu().numpy() if parts else np.full(len(grp), np.inf))
    for grp, s in zip(graph.groups, out):
        if s.shape != (len(grp),):
            raise ConfigError(f"{type(criterion).__name__} gave {s.shape} scores for a group of {len(grp)} channels")
    return out
