"""The channel-pruning transform: graph -> scores -> selection -> physical removal (all or nothing)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ...core.errors import ConfigError, DataError
from ...core.select import candidates, select_layers
from ...graph import ChannelGraph, PrunePlan
from ..api import PRUNE
from .config import ChannelPruning, Latency, LatencyAware
from .importance import L1
from .search import group_scores, normalised, select, solve_budget

log = logging.getLogger(__name__)
#: layers whose output channels structured pruning removes (their consumers and norms follow)
PRODUCERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


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
    if example_inputs is not None:
        return example_inputs
    if data is not None:
        try:
            first = data[0] if isinstance(data, torch.utils.data.Dataset) else None
        except Exception:  # noqa: BLE001 -- any indexing failure means "cannot infer"
            first = None
        if isinstance(first, (tuple, list)) and isinstance(first[0], torch.Tensor):
            return first[0].unsqueeze(0).repeat(2, *([1] * first[0].dim()))
    raise DataError("structured pruning traces the model: pass example_inputs= (a batch of inputs, e.g. "
                    "torch.randn(2, 1, 28, 28)) or data= (a dataset whose items are (input, target))")


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
    x = example_from(data, example_inputs)
    sel = select_layers(model, config.include, config.exclude, supported=PRODUCERS, who="ChannelPruning")
    chosen = set(sel.names)
    graph = ChannelGraph(model, x, keep=tuple(n for n, m in candidates(model, PRODUCERS)
                                              if n not in chosen and isinstance(m, PRODUCERS)))
    if not graph.groups:
        raise ConfigError(f"{type(model).__name__} has no prunable channels (all are inputs, outputs, kept "
                          "layers or mixed by channel-wise ops)")
    importance = (config.importance or L1()).prepare(model, graph, data=data, loss_fn=loss_fn)
    scores = group_scores(model, graph, importance)
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
