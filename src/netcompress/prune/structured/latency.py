"""Latency budgets: a per-layer latency table measured on this device, then a NetAdapt-style greedy.

The table times every distinct conv/linear layer alone at a grid of (in, out) channel counts. What it does not
see (norms, activations, pools, adds, framework overhead) is first spread over the activations the layers
produce, then corrected group by group: the whole model is measured with one group thinned at a time, and
the gap to the table's prediction becomes that group's correction (a max-pool over a wide early layer costs
far more per channel than the table's share says).
The greedy removes, step by step, the channels whose importance per predicted millisecond saved is lowest;
under a Latency budget the result is then measured and the target corrected for a few rounds.
"""
from __future__ import annotations

import copy
import logging
import math

import numpy as np
import torch
from torch import nn

from ...core.errors import ConfigError
from ...graph import handler_for
from ...measure.latency import compare_latency, measure_latency, set_threads
from .search import floor_keep, kept_count, normalised

log = logging.getLogger(__name__)
_FRACTIONS = (0.125, 0.25, 0.5, 0.75, 1.0)


def _levels(n: int, round_to: int) -> list[int]:
    lv = {n} | {max(1, min(n, round(f * n / round_to) * round_to or round_to)) for f in _FRACTIONS}
    return sorted(lv)


def timed(module: nn.Module, x: torch.Tensor, runtime: str, threads: int, standalone: bool = False):
    """What to time for ``module`` on ``runtime``: the module itself (eager), or an onnxruntime session on
    its ONNX export. ``standalone``: a single layer, exported by the TorchScript exporter (far quicker than the
    torch.export one, and a lone Conv or Gemm comes out the same)."""
    if runtime == "eager":
        return module.eval()
    import tempfile
    from pathlib import Path

    from ...export.onnx import export_graph, ort_session, to_onnx
    from ...measure.latency import ort_callable

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        if standalone:
            export_graph(module.eval(), (x,), path, 17, {0: "batch"}, ["input"], dynamo=False)
        else:
            to_onnx(module, x[:2], path, verify=False)
        session = ort_session(path, threads=threads)  # reads the file now: the directory can go
    return ort_callable(session)


class LatencyTable:
    """Measured milliseconds per layer configuration at (in, out) channel counts, interpolated bilinearly,
    on ``runtime`` ("eager" or "onnxruntime")."""

    def __init__(self, batch_size: int = 32, threads: int = 1, repeats: int = 7, round_to: int = 1,
                 runtime: str = "eager"):
        self.batch_size, self.threads, self.repeats, self.round_to = batch_size, threads, repeats, round_to
        self.runtime = runtime
        self._grids: dict[tuple, tuple[list[int], list[int], np.ndarray]] = {}
        self._key_of: dict[str, tuple] = {}

    def build(self, model: nn.Module, graph) -> "LatencyTable":
        set_threads(self.threads)
        for layer in graph.layers:
            mod = model.get_submodule(layer.module)
            key = self._key(mod, layer)
            self._key_of[layer.module] = key
            if key in self._grids:
                continue
            n_in, n_out = layer.kept()
            ins = [1] if layer.depthwise else _levels(n_in, self.round_to)
            outs = _levels(n_out, self.round_to)
            grid = np.full((len(ins), len(outs)), np.inf)
            for _ in range(2):  # two passes, keep the faster: a loaded machine only ever adds time
                for i, a in enumerate(ins):
                    for j, b in enumerate(outs):
                        op, x = _standalone(mod, layer, b if layer.depthwise else a, b, self.batch_size)
                        run = timed(op, x, self.runtime, self.threads, standalone=True)
                        ms = measure_latency(run, x, warmup=3, repeats=self.repeats, threads=None).median_ms
                        grid[i, j] = min(grid[i, j], ms)
            # more channels never cost less: smooth the noise out so the greedy cannot exploit it
            grid = np.maximum.accumulate(np.maximum.accumulate(grid, axis=0), axis=1)
            self._grids[key] = (ins, outs, grid)
        log.info("latency table: %d layer configurations measured", len(self._grids))
        return self

    @staticmethod
    def _key(mod, layer) -> tuple:
        cfg = tuple(getattr(mod, a, None) for a in ("kernel_size", "stride", "padding", "dilation"))
        positions = layer.in_shape[1:layer.cdim] + layer.in_shape[layer.cdim + 1:]  # (B, C, H, W) -> (H, W)
        return (type(mod).__name__, layer.depthwise, cfg, tuple(positions), *layer.kept())

    def layer_ms(self, module: str, n_in: int, n_out: int) -> float:
        ins, outs, grid = self._grids[self._key_of[module]]
        row = np.array([np.interp(n_out, outs, grid[i]) for i in range(len(ins))])
        return float(np.interp(n_in, ins, row)) if len(ins) > 1 else float(row[0])

    def predict(self, graph, pruned_units=None) -> float:
        """Milliseconds: the table's layers plus the rest of the model (``calibrate``), which is taken to
        scale with the activations the layers produce (norms, activations, adds act on them), plus the
        measured per-group corrections (``calibrate_groups``)."""
        keep = graph.channel_keep(pruned_units)
        total = act = act_dense = 0.0
        for layer in graph.layers:
            n_in, n_out = layer.kept(keep)
            total += self.layer_ms(layer.module, n_in, n_out)
            act += n_out * layer.spatial
            act_dense += layer.kept()[1] * layer.spatial
        total += getattr(self, "other_ms", 0.0) * act / max(act_dense, 1)
        corrections = getattr(self, "corrections", None)
        if corrections:
            kept = _kept_per_group(graph, pruned_units)
            total += sum(float(np.interp(kept[g], ks, cs)) for g, (ks, cs) in corrections.items())
        return max(total, 1e-6)  # noisy corrections on a tiny model must not make time negative

    def calibrate_groups(self, model, graph, x, fractions=(0.5, 0.25)) -> "LatencyTable":
        """Measure the model with each group alone thinned to ``fractions`` of its channels (interleaved with
        the dense model) and keep, per group, the measured minus the predicted milliseconds as a correction,
        interpolated in the kept count (0 at the dense count, held flat below the thinnest measured)."""
        self.corrections = {}
        dense_kept = _kept_per_group(graph, None)
        candidates, probes = {"dense": timed(model, x, self.runtime, self.threads)}, {}
        unit_ids = _unit_ids(graph)
        for g, grp in enumerate(graph.groups):
            n = len(grp)
            units = unit_ids[g]
            for f in fractions:
                k = kept_count(n, n - max(1, round(f * n)), self.round_to, 1)
                if k >= n or any(p[:2] == (g, k) for p in probes.values()):
                    continue
                pruned = np.zeros(len(graph.group_of_unit), dtype=bool)
                pruned[units[: n - k]] = True
                thinned = graph.plan(np.nonzero(~graph.channel_keep(pruned))[0]).apply(copy.deepcopy(model))
                candidates[f"g{g}k{k}"] = timed(thinned, x, self.runtime, self.threads)
                probes[f"g{g}k{k}"] = (g, k, pruned)
        if not probes:
            return self
        # two interleaved passes, each candidate's faster median kept: a loaded machine only ever adds time,
        # and a correction made of load sends the greedy anywhere
        passes = [compare_latency(candidates, x, warmup=2, repeats=max(self.repeats, 7), threads=self.threads)
                  for _ in range(2)]
        ms_of = {k: min(p[k].median_ms for p in passes) for k in candidates}
        dense_pred = self.predict(graph, None)
        scale = dense_pred / ms_of["dense"]  # the table's ms per measured ms
        points: dict[int, list[tuple[int, float]]] = {}
        for name, (g, k, pruned) in probes.items():
            # removing channels never costs time: a thinned model measured slower than dense is noise
            ms = min(ms_of[name] * scale, dense_pred)
            points.setdefault(g, [(int(dense_kept[g]), 0.0)]).append((k, ms - self.predict(graph, pruned)))
        for g, pts in points.items():
            pts.sort()
            self.corrections[g] = ([p[0] for p in pts], [p[1] for p in pts])
        log.info("latency table: %d groups corrected by %d whole-model measurements", len(points), len(probes))
        return self

    def calibrate(self, graph, dense_ms: float) -> "LatencyTable":
        """Attribute what the measured dense model spends outside the table's layers."""
        self.other_ms = 0.0
        self.other_ms = max(0.0, dense_ms - self.predict(graph, None))
        return self


def _kept_per_group(graph, pruned_units) -> np.ndarray:
    live = graph.group_of_unit >= 0
    if pruned_units is not None:
        live = live & ~pruned_units
    return np.bincount(graph.group_of_unit[live], minlength=len(graph.groups))


def _standalone(mod: nn.Module, layer, n_in: int, n_out: int, batch: int):
    """A copy of ``mod`` cut to its first ``n_in``/``n_out`` channels (by its graph handler), and an input."""
    keep = {"channel": range(n_out)} if layer.depthwise else {"in": range(n_in), "out": range(n_out)}
    op = handler_for(mod).prune(copy.deepcopy(mod), keep)
    shape = list(layer.in_shape)
    shape[0], shape[layer.cdim] = batch, n_out if layer.depthwise else n_in
    return op, torch.randn(*shape)


def _unit_ids(graph) -> list[np.ndarray]:
    """Per group, the unit index of each of its channels (in group order)."""
    return [graph.unit_of[[u[0] for u in grp.units]] for grp in graph.groups]


def _step(n: int, round_to: int) -> int:
    """Channels one greedy step moves in a group of ``n``: a 16th of it, at least ``round_to``."""
    return max(round_to, math.ceil(n / 16))


def _thinner(n, keep_now, scores_g, order_g, round_to, min_keep, max_ratio) -> int | None:
    """The kept count one step below ``keep_now``, or None when the floor is reached or the step would
    cut a locked (non-finite score) channel."""
    keep_new = kept_count(n, n - keep_now + _step(n, round_to), round_to, floor_keep(n, min_keep, max_ratio))
    if keep_new >= keep_now or not np.isfinite(scores_g[order_g[: n - keep_new]]).all():
        return None
    return keep_new


def _greedy(graph, table, scores, done, round_to, min_keep, max_ratio=None):
    """Remove channel steps (least importance lost per predicted ms saved) until ``done(pruned, ms)``.

    Returns the trajectory [(pruned-units mask, predicted ms)] from dense to the last step taken."""
    pruned = np.zeros(len(graph.group_of_unit), dtype=bool)
    order = [np.argsort(s, kind="stable") for s in scores]
    n_pruned = [0] * len(graph.groups)
    unit_ids = _unit_ids(graph)
    current = table.predict(graph, pruned)
    path = [(pruned, current)]
    while not done(pruned, current):
        best = None
        for g, grp in enumerate(graph.groups):
            n = len(grp)
            keep_new = _thinner(n, n - n_pruned[g], scores[g], order[g], round_to, min_keep, max_ratio)
            if keep_new is None:
                continue
            trial = pruned.copy()
            trial[unit_ids[g][order[g][: n - keep_new]]] = True
            ms = table.predict(graph, trial)
            # a step the table says saves nothing (noise in a measured correction) stays possible, last
            saved = max(current - ms, 1e-6 * current)
            lost = float(scores[g][order[g][n_pruned[g]: n - keep_new]].sum()) + 1e-12
            if best is None or lost / saved < best[0]:
                best = (lost / saved, g, trial, ms, n - keep_new)
        if best is None:
            break
        _, g, pruned, current, n_pruned[g] = best
        path.append((pruned, current))
    return path


def solve_latency(model, graph, scores, config, example_inputs, comparable: bool):
    """(pruned units, report) meeting ``config.budget`` (a Latency) as measured, or a ConfigError.

    The greedy path is walked with the table's prediction first, then bisected on measured speedups
    (at most ``rounds`` measurements) to land within 5% of the asked speedup when the device allows."""
    budget = config.budget
    scores = normalised(scores, _as_global(config.scope), comparable)  # ranked across groups
    table, xb, dense_ms = _calibrated_table(model, graph, example_inputs, budget.batch_size, budget.threads,
                                            budget.repeats, max(5, budget.repeats // 3), config.round_to)
    target_ms = dense_ms / (budget.speedup * 2.5)
    path = _greedy(graph, table, scores, lambda _, ms: ms <= target_ms, config.round_to, config.min_channels,
                   config.max_ratio)
    best_pred = dense_ms / path[-1][1]
    if best_pred < budget.speedup:
        raise ConfigError(f"budget {budget} cannot be met: removing every prunable channel down to "
                          f"min_channels={config.min_channels}{_cap(config)} predicts {best_pred:.2f}x; the best "
                          f"reachable is about Latency(speedup={math.floor(best_pred * 100) / 100})")
    predicted = [dense_ms / ms for _, ms in path]
    lo, hi = 0, len(path) - 1
    i = next(k for k, p in enumerate(predicted) if p >= budget.speedup)
    measured: dict[int, tuple[float, dict]] = {}
    for rnd in range(budget.rounds):
        candidate = graph.plan(np.nonzero(~graph.channel_keep(path[i][0]))[0]).apply(copy.deepcopy(model))
        stats = compare_latency({"dense": model, "pruned": candidate}, xb, warmup=3, repeats=budget.repeats,
                                threads=budget.threads)
        speedup = stats["dense"].median_ms / stats["pruned"].median_ms
        measured[i] = (speedup, {"dense_ms": stats["dense"].median_ms, "pruned_ms": stats["pruned"].median_ms})
        log.info("latency round %d: step %d/%d predicted %.2fx, measured %.2fx", rnd + 1, i, len(path) - 1,
                 predicted[i], speedup)
        if abs(speedup / budget.speedup - 1) <= 0.05:
            break
        if speedup < budget.speedup:
            lo = i + 1
        else:
            hi = i - 1
        if lo > hi:
            break
        # next step: where the table, rescaled by what the device showed, expects the target
        scale = speedup / predicted[i]
        want = [k for k in range(lo, hi + 1) if predicted[k] * scale >= budget.speedup]
        i = want[0] if want else hi
        i = min(max(i, lo), hi)
    # the measured step closest to the target, preferring those that reach it
    pick = min(measured, key=lambda k: (measured[k][0] < 0.95 * budget.speedup, abs(measured[k][0] - budget.speedup)))
    speedup, times = measured[pick]
    report = {"predicted_speedup": predicted[pick], "measured_speedup": speedup, "rounds": len(measured),
              "dense_ms_alone": dense_ms, "table_layers": len(table._grids), "batch_size": budget.batch_size,
              **times}
    return path[pick][0], report


def _calibrated_table(model, graph, example_inputs, batch_size, threads, repeats, table_repeats, round_to,
                      runtime: str = "eager", per_group: bool = False):
    """(table calibrated on the measured dense model, batch input, dense ms); ``runtime="both"`` gives the
    mean of an eager and an onnxruntime table. ``per_group``: add the measured per-group corrections (the
    MACs-budget greedy stops on the table's word alone; the Latency budget measures its result anyway)."""
    x = example_inputs[0] if isinstance(example_inputs, (tuple, list)) else example_inputs
    xb = x[:1].expand(batch_size, *x.shape[1:]).contiguous()
    tables, dense = [], []
    for rt in ("eager", "onnxruntime") if runtime == "both" else (runtime,):
        table = LatencyTable(batch_size, threads, table_repeats, round_to, rt).build(model, graph)
        dense_ms = measure_latency(timed(model, xb, rt, threads), xb, warmup=3, repeats=repeats,
                                   threads=threads).median_ms
        table.calibrate(graph, dense_ms)
        tables.append(table.calibrate_groups(model, graph, xb) if per_group else table)
        dense.append(dense_ms)
    return (tables[0] if len(tables) == 1 else MeanTable(tables, dense)), xb, dense[0]


class MeanTable:
    """Several runtimes' tables as one: the mean of their latencies relative to dense, in the first one's ms."""

    def __init__(self, tables, dense_ms):
        self.tables, self.dense_ms = tables, dense_ms
        self._grids = {k: v for t in tables for k, v in t._grids.items()}

    def predict(self, graph, pruned_units=None) -> float:
        return self.dense_ms[0] * float(np.mean([t.predict(graph, pruned_units) / d
                                                 for t, d in zip(self.tables, self.dense_ms)]))

    def speedups(self, graph, pruned_units) -> dict[str, float]:
        return {t.runtime: t.predict(graph, None) / t.predict(graph, pruned_units) for t in self.tables}


def solve_budget_latency_aware(model, graph, scores, config, example_inputs, comparable: bool, extra_params: int = 0):
    """(pruned units, report): a MACs/Params budget met by the latency-aware greedy (``LatencyAware`` scope).

    The greedy removes the channels costing least importance per predicted millisecond saved and stops at
    the first step inside the budget, so the MACs go where the device spends its time. Scores are put on one
    scale across groups as ``scope.importance_scale`` says (shares of their group's total, or over its mean),
    whatever ``comparable`` says; ``scope.refine`` then trades steps between groups (``_refine``)."""
    from .config import Global, MACs

    scope, budget = config.scope, config.budget
    key = "macs" if isinstance(budget, MACs) else "params"
    extra = 0 if key == "macs" else extra_params
    dense = graph.cost(None)[key] + extra
    target = budget.fraction * dense
    # a channel's score as its share of its group's total: removing a quarter of a 32-channel layer then costs
    # more than a quarter of a 128-channel one. (Normalising by the group mean, as Global does, makes every
    # channel ~1 and lets the greedy empty the thin, cheap-per-ms early layers first.)
    if scope.importance_scale == "mean":  # every channel ~1: the cut follows the milliseconds
        scores = normalised(scores, Global(normalize=True), False)
    else:
        scores = [s / s[np.isfinite(s)].sum() if np.isfinite(s).any() and s[np.isfinite(s)].sum() > 0 else s
                  for s in scores]
    table, _, dense_ms = _calibrated_table(model, graph, example_inputs, scope.batch_size, scope.threads,
                                           max(scope.repeats, 5), scope.repeats, config.round_to, scope.runtime,
                                           per_group=True)
    path = _greedy(graph, table, scores, lambda pruned, _: graph.cost(pruned)[key] + extra <= target,
                   config.round_to, config.min_channels, config.max_ratio)
    pruned, ms = path[-1]
    reached = graph.cost(pruned)[key] + extra
    greedy_ms = ms
    if reached <= target and scope.refine:
        pruned, ms = _refine(graph, table, scores, pruned, lambda p: graph.cost(p)[key] + extra <= target,
                             config.round_to, config.min_channels, config.max_ratio)
    if reached > target:
        raise ConfigError(f"budget {budget} cannot be met: the latency-aware greedy, pruning every group down to "
                          f"min_channels={config.min_channels}{_cap(config)}, leaves {reached / dense:.4f} of the "
                          f"{key}; the best "
                          f"reachable is {type(budget).__name__}({math.ceil(reached / dense * 1e4) / 1e4})")
    report = {"predicted_speedup": dense_ms / ms, "dense_ms_alone": dense_ms, "steps": len(path) - 1,
              "table_layers": len(table._grids), "batch_size": scope.batch_size, "runtime": scope.runtime}
    if scope.refine:
        report["greedy_predicted_speedup"] = dense_ms / greedy_ms
    if isinstance(table, MeanTable):
        report["predicted_speedup_per_runtime"] = table.speedups(graph, pruned)
    log.info("latency-aware %s budget met in %d steps, predicted speedup %.2fx", key, len(path) - 1, dense_ms / ms)
    return pruned, report


def _refine(graph, table, scores, pruned, fits, round_to, min_keep, max_ratio, rounds: int = 40):
    """Trade one step of one group for one step of another while the budget holds and the table predicts
    a faster model (by 0.5% at least, so noise in the table is not chased). The greedy stops at the first
    step inside the budget and never revisits a cut; this moves channels between layers afterwards."""
    order = [np.argsort(s, kind="stable") for s in scores]
    unit_ids = _unit_ids(graph)
    sizes = [len(grp) for grp in graph.groups]
    kept = [int(n - pruned[ids].sum()) for n, ids in zip(sizes, unit_ids)]

    def mask(k):
        m = np.zeros(len(graph.group_of_unit), dtype=bool)
        for g, n in enumerate(sizes):
            m[unit_ids[g][order[g][: n - k[g]]]] = True
        return m

    def fewer(g):
        return _thinner(sizes[g], kept[g], scores[g], order[g], round_to, min_keep, max_ratio)

    def more(g):
        return min(sizes[g], kept[g] + _step(sizes[g], round_to)) if kept[g] < sizes[g] else None

    current_mask, current = pruned, table.predict(graph, pruned)
    for _ in range(rounds):
        best = None
        for a in range(len(sizes)):
            ka = fewer(a)
            if ka is None:
                continue
            for b in range(len(sizes)):
                kb = more(b) if b != a else None
                if kb is None:
                    continue
                trial = list(kept)
                trial[a], trial[b] = ka, kb
                m = mask(trial)
                if not fits(m):
                    continue
                ms = table.predict(graph, m)
                if ms < current * 0.995 and (best is None or ms < best[0]):
                    best = (ms, trial, m)
        if best is None:
            break
        current, kept, current_mask = best
    return current_mask, current


def _cap(config) -> str:
    return f" (max_ratio={config.max_ratio})" if config.max_ratio is not None else ""


def _as_global(scope):
    from .config import Global

    return scope if isinstance(scope, Global) else Global()
