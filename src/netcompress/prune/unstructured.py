"""Scores -> masks (scope x granularity), and the ``prune_`` transform for :class:`Unstructured`.

Masks only ever shrink: weights already pruned stay pruned when a model is pruned again (iterative and
gradual schedules call this repeatedly with rising sparsity).

>>> import torch
>>> from netcompress.models import lenet_300_100
>>> from netcompress.prune import prune_, Unstructured, Global, sparsity
>>> m = lenet_300_100()
>>> report = prune_(m, Unstructured(sparsity=0.9, scope=Global()))
>>> round(sparsity(m), 4)
0.9
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import nn

from ..core.errors import ConfigError
from .api import PRUNE
from .config import NM, Global, Neurons, Unstructured, geometric
from .masks import Target, select, set_mask
from .second_order import OBS

log = logging.getLogger(__name__)


def _lowest(values: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the ``k`` lowest entries of a 1-D tensor (exact count, ties broken by position)."""
    out = torch.zeros_like(values, dtype=torch.bool)
    if k > 0:
        out[torch.argsort(values, stable=True)[:k]] = True
    return out


def _row_view(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def check_granularity(targets: Sequence[Target], config: Unstructured) -> None:
    g = config.granularity
    if isinstance(g, NM):
        bad = [t for t in targets if _row_view(t.original()).shape[1] % g.m]
        if bad:
            dims = ", ".join(f"{t.fqn} ({_row_view(t.original()).shape[1]})" for t in bad)
            raise ConfigError(f"NM({g.n}, {g.m}) needs input dimensions divisible by {g.m}; not: {dims}; exclude "
                              f"those layers (exclude={[t.name for t in bad]}) or pick another m")


def masks_from_scores(scores: Sequence[torch.Tensor], targets: Sequence[Target], config: Unstructured,
                      sparsity: float | None = None) -> list[torch.Tensor]:
    """Bool keep-masks reaching ``sparsity`` (default: the config's) over ``targets``."""
    s = config.target_sparsity if sparsity is None else sparsity
    old = [t.mask() for t in targets]
    # already-pruned weights rank below everything, so they stay pruned
    scores = [torch.where(o, sc.float(), torch.tensor(float("-inf"))) for sc, o in zip(scores, old)]
    g = config.granularity
    if isinstance(g, NM):
        out = []
        for sc, o in zip(scores, old):
            groups = _row_view(sc).reshape(sc.shape[0], -1, g.m)  # (rows, groups, m)
            keep = torch.zeros_like(groups, dtype=torch.bool)
            keep.scatter_(2, torch.topk(groups, g.n, dim=2).indices, True)
            out.append(keep.reshape(sc.shape) & o)
        return out
    if isinstance(g, Neurons):
        units = [_row_view(sc).mean(1) for sc in scores]  # -inf stays -inf for a dead row
        sizes = [_row_view(sc).shape[1] for sc in scores]
        if isinstance(config.scope, Global):
            flat = torch.cat(units)
            pruned = _lowest(flat, round(s * len(flat))).split([len(u) for u in units])
        else:
            pruned = [_lowest(u, round(s * len(u))) for u in units]
        return [(~p).unsqueeze(1).expand(-1, n).reshape(sc.shape) & o
                for p, n, sc, o in zip(pruned, sizes, scores, old)]
    if isinstance(config.scope, Global):
        flat = torch.cat([sc.reshape(-1) for sc in scores])
        pruned = _lowest(flat, round(s * len(flat))).split([sc.numel() for sc in scores])
        return [(~p).reshape(sc.shape) for p, sc in zip(pruned, scores)]
    return [(~_lowest(sc.reshape(-1), round(s * sc.numel()))).reshape(sc.shape) for sc in scores]


def _set_masks(targets: Sequence[Target], masks: Sequence[torch.Tensor], neurons: bool) -> None:
    for t, m in zip(targets, masks):
        set_mask(t.module, t.param, m)
        bias = getattr(t.module, "bias", None) if neurons else None
        if bias is not None:
            # a pruned unit's bias goes too, so the unit really outputs zero
            set_mask(t.module, "bias", _row_view(m).any(1))


def _step_sparsities(start: float, final: float, steps: int) -> list[float]:
    """Intermediate targets with the same fraction of the remaining weights removed at each step."""
    if steps <= 1 or final <= start:
        return [final]
    return [geometric(start, final, i / steps) for i in range(1, steps)] + [final]


def prune_unstructured(model: nn.Module, config: Unstructured, data=None, loss_fn=None,
                       sparsity: float | None = None, targets: Sequence[Target] | None = None) -> list[Target]:
    """Apply ``config`` to ``model`` in place (validates everything first); returns the pruned targets
    (``targets``: the ones already selected by ``config.include`` / ``exclude``)."""
    if targets is None:
        targets = select(model, config.include, config.exclude, who=type(config).__name__)
    check_granularity(targets, config)
    config.criterion.check(data)
    final = config.target_sparsity if sparsity is None else sparsity
    crit = config.criterion
    neurons = isinstance(config.granularity, Neurons)
    if isinstance(crit, OBS):
        total = sum(t.original().numel() for t in targets)
        start = sum(int((~t.mask()).sum()) for t in targets) / total
        for s in _step_sparsities(start, final, crit.steps):
            invs = crit.inverse(model, targets, data, loss_fn)
            masks = masks_from_scores(crit.scores_from(invs, targets), targets, config, s)
            crit.apply_update(invs, targets, masks)
            _set_masks(targets, masks, neurons)
            log.info("OBS step to sparsity %.4f done", s)
        return targets
    scores = crit.scores(model, targets, data, loss_fn)
    _set_masks(targets, masks_from_scores(scores, targets, config, final), neurons)
    return targets


@PRUNE.register(Unstructured)
def _apply_unstructured(model: nn.Module, config: Unstructured, report, *, data=None, example_inputs=None,
                        loss_fn=None) -> None:
    targets = select(model, config.include, config.exclude, who="Unstructured", report=report)
    before = {t.fqn: int(t.mask().sum()) for t in targets}
    for t in prune_unstructured(model, config, data=data, loss_fn=loss_fn, targets=targets):
        total, kept = t.original().numel(), int(t.mask().sum())
        report.change(t.name, t.module, f"{1 - kept / total:.1%} of {t.param} masked",
                      {"nonzero": before[t.fqn], "numel": total}, {"nonzero": kept, "numel": total})
