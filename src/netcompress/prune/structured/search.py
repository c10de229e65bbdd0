"""Which channels go: rank by importance (within a group or across groups), round counts, meet a budget."""
from __future__ import annotations

import logging
import math

import numpy as np

from ...core.errors import ConfigError
from .config import Global, Local, MACs, Params

log = logging.getLogger(__name__)


def kept_count(n: int, n_prune: int, round_to: int, min_keep: int) -> int:
    keep = max(n - n_prune, min(min_keep, n))
    if round_to > 1:  # nearest multiple (never zero): a count of 8k runs full SIMD lanes
        keep = min(n, max(round_to, math.floor(keep / round_to + 0.5) * round_to))
        if keep < min(min_keep, n):  # rounding never goes under the floor
            keep = min(n, math.ceil(min_keep / round_to) * round_to)
    return keep


def floor_keep(n: int, min_channels: int, max_ratio: float | None) -> int:
    """The fewest channels a group of ``n`` may keep: ``min_channels``, and at most ``max_ratio`` of them gone."""
    if max_ratio is None:
        return min_channels
    return max(min_channels, math.ceil(n * (1 - max_ratio) - 1e-9))


def normalised(scores: list[np.ndarray], scope, comparable: bool) -> list[np.ndarray]:
    norm = scope.normalize if isinstance(scope, Global) and scope.normalize is not None else not comparable
    if not norm:
        return scores
    out = []
    for s in scores:
        finite = s[np.isfinite(s)]
        mean = finite.mean() if len(finite) else 1.0
        out.append(s / mean if mean > 0 else s)
    return out


def select(graph, scores: list[np.ndarray], amount: float, scope, round_to: int = 1, min_keep: int = 1,
           max_ratio: float | None = None) -> np.ndarray:
    """(units,) bool, True = pruned. ``amount``: fraction per group (Local) or of all channels (Global)."""
    pruned = np.zeros(len(graph.group_of_unit), dtype=bool)
    counts: list[int]
    if isinstance(scope, Local):
        counts = [int(math.floor(amount * len(s) + 1e-9)) for s in scores]
    else:
        flat = np.concatenate(scores) if scores else np.zeros(0)
        owner = np.concatenate([np.full(len(s), g) for g, s in enumerate(scores)]) if scores else np.zeros(0, int)
        n_total = int(np.isfinite(flat).sum())
        order = np.argsort(flat, kind="stable")[: int(math.floor(amount * n_total + 1e-9))]
        counts = np.bincount(owner[order], minlength=len(scores)).tolist()
    for g, (grp, s) in enumerate(zip(graph.groups, scores)):
        n_prunable = int(np.isfinite(s).sum())
        keep = kept_count(len(s), min(counts[g], n_prunable), round_to, floor_keep(len(s), min_keep, max_ratio))
        n_prune = min(len(s) - keep, n_prunable)
        if n_prune <= 0:
            continue
        worst = np.argsort(s, kind="stable")[:n_prune]
        units = graph.unit_of[[grp.units[i][0] for i in worst]]
        pruned[units] = True
    return pruned


def solve_budget(graph, scores, budget, scope, round_to=1, min_keep=1, extra_params: int = 0,
                 max_ratio: float | None = None) -> np.ndarray:
    """The least pruning (bisection over the amount) whose MACs or params fit the budget."""
    key = "macs" if isinstance(budget, MACs) else "params"
    extra = extra_params if isinstance(budget, Params) else 0
    dense = graph.cost(None)[key] + extra
    target = budget.fraction * dense

    def cost(t):
        return graph.cost(select(graph, scores, t, scope, round_to, min_keep, max_ratio))[key] + extra

    hi = 1.0 - 1e-9
    best = cost(hi)
    if best > target:
        raise ConfigError(
            f"budget {budget} cannot be met: pruning every group down to min_channels={min_keep}"
            f"{f' (max_ratio={max_ratio})' if max_ratio is not None else ''}"
            f"{f' (round_to={round_to})' if round_to > 1 else ''} leaves {best / dense:.4f} of the {key}; "
            f"the best reachable is {type(budget).__name__}({math.ceil(best / dense * 1e4) / 1e4})")
    lo = 0.0
    if cost(lo) <= target:
        return select(graph, scores, lo, scope, round_to, min_keep, max_ratio)
    for _ in range(40):
        mid = (lo + hi) / 2
        if cost(mid) <= target:
            hi = mid
        else:
            lo = mid
    log.info("budget %s met at amount %.4f", budget, hi)
    return select(graph, scores, hi, scope, round_to, min_keep, max_ratio)
