"""The channel-pruning transform: graph -> scores -> selection -> physical removal (all or nothing)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ...core.data import check_data, first_inputs
from ...core.errors import ConfigError, DataError
from ...core.select import candidates, select_layers
from ...graph import ChannelGraph, PrunePlan, handled_types
from ...train import recalibrate_bn
from ..api import PRUNE
from ..criteria import L1
from .config import ChannelPruning, Latency, LatencyAware
from .importance import group_scores
from .search import normalised, select, solve_budget

log = logging.getLogger(__name__)


@dataclass
class PruneResult:
    """What a structured pruning call did: the replayable plan and the costs before and after
    (params/MACs of the traced conv/linear/norm layers; MACs per sample)."""

    plan: PrunePlan
    before: dict
    after: dict
    latency: dict = field(default_factory=dict)  # Latency budgets: predicted vs measured
    skipped: list = field(default_factory=list)  # layers whose output channels were left alone, and why

    @property
    def mac_ratio(self) -> float:
        return self.before["macs"] / max(self.after["macs"], 1)

    def summary(self) -> str:
        s = (f"params {self.before['params']:,} -> {self.after['params']:,}, MACs {self.before['macs']:,} -> "
             f"{self.after['macs']:,} ({self.mac_ratio:.2f}x fewer)")
        if "predicted_speedup" in self.latency:
            s += f"; latency speedup predicted {self.latency['predicted_speedup']:.2f}x"
        if "measured_speedup" in self.latency:
            s += f", measured {self.latency['measured_speedup']:.2f}x"
        return s


def example_from(data, example_inputs):
    """The inputs to trace the model with: ``example_inputs``, else the first two inputs of ``data``."""
    if example_inputs is not None:
        return example_inputs
    if data is None:
        raise DataError("structured pruning traces the model: pass example_inputs= (a batch of inputs, e.g. "
                        "torch.randn(2, 1, 28, 28)) or data= (inputs, or (input, target) pairs)")
    return first_inputs(data, 2)


def recalibrate(model: nn.Module, config, data, check: bool = False) -> None:
    """Re-estimate the BatchNorm statistics after a removal, when ``config.recalibrate_bn`` asks for it
    (``check``: only fail now, before anything changes, if there is no data to do it on)."""
    if config.recalibrate_bn:
        if check:
            check_data(data, f"{type(config).__name__}.recalibrate_bn", need_labels=False)
        else:
            recalibrate_bn(model, data, config.recalibrate_bn)


def prune_channels(model: nn.Module, config: ChannelPruning, example_inputs=None, data=None, loss_fn=None,
                   plan_path=None, force: bool = False) -> PruneResult:
    """Prune ``model`` in place as ``config`` says and return the plan and costs.

    Nothing in ``model`` changes unless the whole call succeeds.

    >>> import torch, netcompress as nc
    >>> from netcompress.prune.structured import ChannelPruning, MACs, L1
    >>> m = nc.models.create_model("resnet20", in_channels=1, input_size=16)
    >>> r = prune_channels(m, ChannelPruning(budget=MACs(0.5), importance=L1()), torch.randn(2, 1, 16, 16))
    >>> r.mac_ratio >= 2.0, m(torch.randn(3, 1, 16, 16)).shape
    (True, torch.Size([3, 10]))
    """
    if not isinstance(config, ChannelPruning):
        raise ConfigError(f"prune_channels takes a ChannelPruning config, got {type(config).__name__}")
    importance = config.importance or L1()
    importance.check(data)
    recalibrate(model, config, data, check=True)
    x = example_from(data, example_inputs)
    # layers of a type with no graph handler are skipped (with a warning) and their channels locked
    supported = handled_types()
    sel = select_layers(model, config.include, config.exclude, supported=supported, who="ChannelPruning")
    chosen = set(sel.names)
    graph = ChannelGraph(model, x, keep=tuple(n for n, m in candidates(model, supported)
                                              if n not in chosen and isinstance(m, supported)))
    if not graph.groups:
        raise ConfigError(f"{type(model).__name__} has no prunable channels (all are inputs, outputs, kept "
                          "layers or mixed by channel-wise ops)")
    scores = group_scores(model, graph, importance, data=data, loss_fn=loss_fn)
    before = graph.cost(None)
    extra_params = sum(p.numel() for p in model.parameters()) - before["params"]
    latency = {}
    if isinstance(config.budget, Latency):
        from .latency import solve_latency

        pruned, latency = solve_latency(model, graph, scores, config, x, importance.comparable)
    elif isinstance(config.scope, LatencyAware):
        from .latency import solve_budget_latency_aware

        pruned, latency = solve_budget_latency_aware(model, graph, scores, config, x, importance.comparable,
                                                     extra_params)
    elif config.budget is not None:
        scores = normalised(scores, config.scope, importance.comparable)
        pruned = solve_budget(graph, scores, config.budget, config.scope, config.round_to, config.min_channels,
                              extra_params, config.max_ratio)
    else:
        scores = normalised(scores, config.scope, importance.comparable)
        pruned = select(graph, scores, config.ratio, config.scope, config.round_to, config.min_channels,
                        config.max_ratio)
    plan = graph.plan(np.nonzero(~graph.channel_keep(pruned))[0])
    after = graph.cost(pruned)
    if plan_path is not None:
        plan.save(plan_path, force=force)
    plan.apply(model)
    recalibrate(model, config, data)
    result = PruneResult(plan, before, after, latency, sel.skipped)
    log.info("structured pruning: %s", result.summary())
    return result


def report_plan(report, result: PruneResult) -> None:
    """Per module of the plan, the channel counts before and after; replaced blocks; the plan and costs."""
    plan = result.plan
    mods = dict(report.model.named_modules())
    for name, roles in plan.modules.items():
        sizes = {role: (plan.dense.get(name, {}).get(role), len(keep)) for role, keep in roles.items()}
        what = ", ".join(f"{role} {a} -> {b}" for role, (a, b) in sizes.items() if a != b)
        if what:
            report.change(name, mods[name], f"channels {what}", {r: a for r, (a, _) in sizes.items()},
                          {r: b for r, (_, b) in sizes.items()})
    for name, kind in plan.replace.items():
        report.change(name, mods.get(name, kind), f"block replaced by {kind}")
    report.skipped.extend(result.skipped)
    report.details.update(plan=plan, result=result, before=result.before, after=result.after,
                          latency=result.latency)


@PRUNE.register(ChannelPruning)
def _channel_pruning(model, config, report, *, data=None, example_inputs=None, loss_fn=None):
    report_plan(report, prune_channels(model, config, example_inputs=example_inputs, data=data, loss_fn=loss_fn))
