"""Sensitivity analysis: prune each layer alone over a sweep of levels and evaluate; CSV + PNG; and a
helper turning the table and a global target into per-layer levels.

Rows are dicts ``{"layer", "params", "sparsity", "metric"}``; ``sparsity == 0`` rows hold the unpruned
metric. Under ``torch.distributed`` the layers are split across ranks and the rows gathered on all.
"""
from __future__ import annotations

import copy
import csv
import io
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ..core.errors import ConfigError
from ..core.io import atomic_write, ensure_writable
from ..core.config import Fraction, check
from .config import Unstructured
from .criteria import Criterion, Magnitude
from .masks import select
from .unstructured import prune_unstructured

log = logging.getLogger(__name__)

DEFAULT_LEVELS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
FIELDS = ("layer", "params", "sparsity", "metric")


def _default_metric(data) -> Callable[[nn.Module], float]:
    from ..measure import accuracy

    return lambda model: accuracy(model, data)


def sensitivity_analysis(model: nn.Module, data=None, levels: Sequence[float] = DEFAULT_LEVELS,
                         criterion: Criterion = Magnitude(), include: Sequence[str] = ("*",),
                         exclude: Sequence[str] = (), metric: Callable[[nn.Module], float] | None = None,
                         calibration=None) -> list[dict]:
    """Prune each selected layer alone to each level (on a copy), and record ``metric(copy)``.

    ``metric`` defaults to top-1 accuracy on ``data``; ``calibration`` feeds data-hungry criteria."""
    for s in levels:
        check(s, Fraction, "levels")
    if metric is None:
        if data is None:
            raise ConfigError("sensitivity_analysis needs data= (to measure accuracy) or metric=")
        metric = _default_metric(data)
    criterion.check(calibration)
    targets = select(model, include, exclude)
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    base = metric(model)
    rows = []
    for t in targets[rank::world]:
        n = t.original().numel()
        rows.append({"layer": t.name, "params": n, "sparsity": 0.0, "metric": base})
        for s in sorted(levels):
            work = copy.deepcopy(model)
            prune_unstructured(work, Unstructured(sparsity=s, criterion=criterion, include=(t.name,)),
                               data=calibration)
            rows.append({"layer": t.name, "params": n, "sparsity": float(s), "metric": float(metric(work))})
            log.info("sensitivity %s @ %.3f: %.4f", t.name, s, rows[-1]["metric"])
    if world > 1:
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, rows)
        order = {t.name: i for i, t in enumerate(targets)}
        rows = sorted((r for part in gathered for r in part), key=lambda r: (order[r["layer"]], r["sparsity"]))
    return rows


def curves(rows: Sequence[dict], levels: Sequence[float]) -> dict[str, list[tuple[float, float]]]:
    """{layer: [(level, metric), ...]} for ``levels`` (0 = the unpruned model), the form reports plot."""
    by_layer: dict[str, dict[float, float]] = {}
    for r in rows:
        by_layer.setdefault(r["layer"], {}).setdefault(r["sparsity"], r["metric"])
    return {layer: [(float(lv), pts[float(lv)]) for lv in levels] for layer, pts in by_layer.items()}


def write_csv(rows: Sequence[dict], path: str | os.PathLike, force: bool = False) -> Path:
    path = ensure_writable(path, force)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows({k: r[k] for k in FIELDS} for r in rows)
    return atomic_write(path, lambda p: p.write_text(buf.getvalue()))


def read_csv(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="") as fh:
        return [{"layer": r["layer"], "params": int(r["params"]), "sparsity": float(r["sparsity"]),
                 "metric": float(r["metric"])} for r in csv.DictReader(fh)]


def plot(rows: Sequence[dict], path: str | os.PathLike, force: bool = False, ylabel: str = "accuracy") -> Path:
    """PNG of metric vs sparsity, one line per layer (matplotlib, Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    path = ensure_writable(path, force)
    fig = Figure(figsize=(6, 4), dpi=110)
    ax = fig.add_subplot()
    for layer in dict.fromkeys(r["layer"] for r in rows):
        pts = sorted((r["sparsity"], r["metric"]) for r in rows if r["layer"] == layer)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=layer)
    ax.set_xlabel("sparsity of the layer (others dense)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return atomic_write(path, lambda p: fig.savefig(p, format="png"))


def levels_for_target(rows: Sequence[dict], target: float) -> dict[str, float]:
    """Per-layer levels from a sensitivity table reaching ``target`` sparsity over the analysed layers.

    Greedy: repeatedly raise the layer whose next level costs the least metric per removed weight,
    until the weighted sparsity reaches ``target`` (the last move stops part-way, so the result hits
    the target instead of overshooting). A target beyond the table's levels is an error.

    >>> rows = [{"layer": "a", "params": 100, "sparsity": s, "metric": m} for s, m in [(0, 1.0), (0.5, 1.0), (0.9, 0.5)]]
    >>> rows += [{"layer": "b", "params": 100, "sparsity": s, "metric": m} for s, m in [(0, 1.0), (0.5, 0.9), (0.9, 0.8)]]
    >>> levels_for_target(rows, 0.5)
    {'a': 0.5, 'b': 0.5}
    """
    check(target, Fraction, "target")
    table: dict[str, dict] = {}
    for r in rows:
        entry = table.setdefault(r["layer"], {"params": r["params"], "curve": {}})
        entry["curve"][float(r["sparsity"])] = float(r["metric"])
    if not table:
        raise ConfigError("the sensitivity table is empty")
    for entry in table.values():
        entry["curve"].setdefault(0.0, max(entry["curve"].values()))
        entry["steps"] = sorted(entry["curve"])
    total = sum(e["params"] for e in table.values())
    levels = {name: 0.0 for name in table}
    reached = lambda: sum(levels[n] * e["params"] for n, e in table.items()) / total  # noqa: E731
    while reached() < target - 1e-12:
        best, best_cost = None, None
        for name, e in table.items():
            higher = [s for s in e["steps"] if s > levels[name]]
            if not higher:
                continue
            nxt = higher[0]
            drop = e["curve"][levels[name]] - e["curve"][nxt]
            cost = max(drop, 0.0) / ((nxt - levels[name]) * e["params"])
            if best_cost is None or cost < best_cost:
                best, best_cost = (name, nxt), cost
        if best is None:
            top = max(max(e["steps"]) for e in table.values())
            raise ConfigError(f"target {target} cannot be reached with the table's levels (max {top}); "
                              "add higher levels to the sweep")
        name, nxt = best
        # the last move stops exactly at the target (the curve is read as piecewise linear)
        needed = levels[name] + (target - reached()) * total / table[name]["params"]
        levels[name] = min(nxt, needed)
        if needed <= nxt:
            break
    return levels


def apply_levels_(model: nn.Module, levels: dict[str, float], criterion: Criterion = Magnitude(), data=None) -> None:
    """Prune each named layer to its own level in place (e.g. the output of :func:`levels_for_target`)."""
    for s in levels.values():
        check(s, Fraction, "levels")
    select(model, include=tuple(levels))  # unknown names fail before anything changes
    criterion.check(data)
    for name, s in levels.items():
        if s > 0:
            prune_unstructured(model, Unstructured(sparsity=s, criterion=criterion, include=(name,)), data=data)
