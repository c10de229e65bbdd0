"""Depth pruning (epsilon-ResNet style): remove residual blocks whose branch contributes least.

A candidate is any sub-module whose traced forward is ``[relu](x + branch(x))`` with the output shaped
like the input; it is replaced by ReLU (or Identity), which equals the block with its branch zeroed.
"""
from __future__ import annotations

import copy
import fnmatch
import logging
import math
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from ...core.data import forward, iter_inputs
from ...core.errors import ConfigError
from ...graph import ChannelGraph, PrunePlan
from ...graph.trace import shape_of, trace
from ..api import PRUNE
from .channels import PruneResult, example_from, report_plan
from .config import BlockPruning, LatencyAware, MACs

log = logging.getLogger(__name__)
_ADD = {operator.add, operator.iadd, torch.add, "add", "add_"}
_RELU = {F.relu, torch.relu, "relu", "relu_"}


def _residual_branch(block: nn.Module, x: torch.Tensor):
    """(branch node, "ReLU" | "Identity", traced module) if ``block`` is x -> [relu](x + branch(x)), else None."""
    try:
        gm = trace(block, x)
    except Exception:  # noqa: BLE001 -- untraceable sub-modules are simply not candidates
        return None
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    if len(placeholders) != 1 or not isinstance(out, fx.Node) or shape_of(out) != tuple(x.shape):
        return None
    kind = "Identity"
    is_relu = (out.op == "call_module" and isinstance(gm.get_submodule(out.target), nn.ReLU)) or \
        (out.op in ("call_function", "call_method") and out.target in _RELU)
    if is_relu:
        kind, out = "ReLU", out.args[0]
    if not isinstance(out, fx.Node) or out.target not in _ADD or len(out.args) < 2:
        return None
    a, b = out.args[:2]
    if a is placeholders[0] and isinstance(b, fx.Node):
        return b, kind, gm
    if b is placeholders[0] and isinstance(a, fx.Node):
        return a, kind, gm
    return None


class _Capture(fx.Interpreter):
    def __init__(self, gm, node):
        super().__init__(gm)
        self.node, self.value = node, None

    def run_node(self, n):
        out = super().run_node(n)
        if n is self.node:
            self.value = out
        return out


def find_blocks(model: nn.Module, example_inputs) -> dict[str, tuple]:
    """name -> (branch node, replacement kind, traced block, block input) for every removable block."""
    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: inputs.setdefault(name, args[0]))
             for name, m in model.named_modules() if name and any(True for _ in m.parameters())]
    try:
        with torch.no_grad():
            model.eval()(example_inputs)
    finally:
        for h in hooks:
            h.remove()
    found = {}
    for name, x in inputs.items():
        if isinstance(x, torch.Tensor) and not any(name.startswith(f + ".") for f in found):
            hit = _residual_branch(model.get_submodule(name), x)
            if hit is not None:
                found[name] = (*hit, x)
    return found


@torch.no_grad()
def block_contributions(model: nn.Module, blocks: dict[str, tuple], data, batches=4, batch_size=64) -> dict[str, float]:
    """RMS(branch(x)) / RMS(x) per block over ``data`` (the epsilon of epsilon-ResNet)."""
    num = {n: 0.0 for n in blocks}
    den = {n: 0.0 for n in blocks}
    inputs: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(n).register_forward_pre_hook(
        lambda mod, args, name=n: inputs.__setitem__(name, args[0])) for n in blocks]
    was_training = model.training
    model.eval()
    try:
        for x in iter_inputs(data, batch_size=batch_size, max_batches=batches, shuffle=True):
            forward(model, x)
            for n, (branch, _, gm, _) in blocks.items():
                cap = _Capture(gm, branch)
                cap.run(inputs[n])
                num[n] += float(cap.value.pow(2).mean())
                den[n] += float(inputs[n].pow(2).mean())
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {n: (num[n] / max(den[n], 1e-12)) ** 0.5 for n in blocks}


@torch.no_grad()
def zero_branches_(model: nn.Module, blocks: dict[str, tuple], names) -> nn.Module:
    """The masked twin of removing ``names``: zero the last parameterised module of each branch."""
    for n in names:
        branch, _, gm, _ = blocks[n]
        if branch.op != "call_module":
            raise ConfigError(f"block {n!r} ends its branch with {branch.target}, not a layer; cannot zero it")
        last = model.get_submodule(f"{n}.{branch.target}")
        last.weight.zero_()
        if getattr(last, "bias", None) is not None:
            last.bias.zero_()
    return model


def block_costs(model: nn.Module, graph: ChannelGraph, blocks: dict[str, tuple]) -> dict[str, dict[str, int]]:
    """MACs (per sample, the graph's count) and params of each block's layers."""
    out = {}
    for n in blocks:
        macs = sum(len(layer.out_labels) * (1 if layer.depthwise else len(layer.in_labels)) * layer.kernel
                   * layer.spatial for layer in graph.layers if layer.module.startswith(n + "."))
        out[n] = {"macs": macs, "params": sum(p.numel() for p in model.get_submodule(n).parameters())}
    return out


def block_latency(model: nn.Module, blocks: dict[str, tuple], scope: LatencyAware) -> dict[str, float]:
    """Milliseconds one call of each block takes alone at ``scope.batch_size`` on ``scope.runtime`` (measured
    on a copy; blocks of the same shape are measured once). With runtime "both", each block's time relative
    to the mean block of its runtime, averaged over the two, times the eager mean block."""
    from ...measure.latency import measure_latency
    from .latency import timed

    per_runtime = []
    for rt in ("eager", "onnxruntime") if scope.runtime == "both" else (scope.runtime,):
        cache: dict[tuple, float] = {}
        out = {}
        for n, (*_, x) in blocks.items():
            block = model.get_submodule(n)
            key = (type(block).__name__, tuple(x.shape[1:]), tuple(tuple(p.shape) for p in block.parameters()))
            if key not in cache:
                xb = x[:1].expand(scope.batch_size, *x.shape[1:]).contiguous()
                run = timed(copy.deepcopy(block), xb, rt, scope.threads)
                cache[key] = measure_latency(run, xb, warmup=2, repeats=scope.repeats,
                                             threads=scope.threads).median_ms
            out[n] = cache[key]
        per_runtime.append(out)
    if len(per_runtime) == 1:
        return per_runtime[0]
    means = [sum(o.values()) / len(o) for o in per_runtime]
    return {n: means[0] * sum(o[n] / m for o, m in zip(per_runtime, means)) / len(per_runtime) for n in blocks}


def _within_budget(model, graph, candidates, ranked, config):
    """The shortest prefix of ``ranked`` whose removal fits ``config.budget``, or a ConfigError."""
    key = "macs" if isinstance(config.budget, MACs) else "params"
    dense = graph.cost(None)[key]
    target = config.budget.fraction * dense
    cost = block_costs(model, graph, candidates)
    left = dense
    for k, n in enumerate(ranked):
        if left <= target:
            return ranked[:k]
        left -= cost[n][key]
    if left <= target:
        return ranked
    raise ConfigError(f"budget {config.budget} cannot be met by removing blocks: all {len(ranked)} removable "
                      f"blocks leave {left / dense:.4f} of the {key}; the best reachable is "
                      f"{type(config.budget).__name__}({math.ceil(left / dense * 1e4) / 1e4}); combine with "
                      "ChannelPruning for more")


def prune_blocks(model: nn.Module, config: BlockPruning, example_inputs=None, data=None, plan_path=None,
                 force: bool = False) -> PruneResult:
    """Replace the residual blocks ``config`` selects; the model changes only if the call succeeds.

    >>> import torch, netcompress as nc
    >>> m = nc.models.create_model("resnet20", in_channels=1, input_size=16)
    >>> r = prune_blocks(m, BlockPruning(blocks=2), torch.randn(4, 1, 16, 16))
    >>> len(r.plan.replace), r.after["macs"] < r.before["macs"]
    (2, True)
    """
    if not isinstance(config, BlockPruning):
        raise ConfigError(f"prune_blocks takes a BlockPruning config, got {type(config).__name__}")
    x = example_from(data, example_inputs)
    blocks = find_blocks(model, x)
    names = [n for n, _ in model.named_modules()]
    for pat in (*config.include, *config.exclude):
        if not any(fnmatch.fnmatchcase(n, pat) for n in names):
            raise ConfigError(f"BlockPruning: {pat!r} matches no module of {type(model).__name__}; "
                              f"residual blocks: {', '.join(blocks) or '(none)'}")

    def hit(n, patterns):
        return any(fnmatch.fnmatchcase(n, p) or n.startswith(p + ".") for p in patterns)
    candidates = {n: b for n, b in blocks.items() if hit(n, config.include) and not hit(n, config.exclude)}
    if not candidates:
        raise ConfigError(f"{type(model).__name__} has no removable residual block (x + branch(x) with an "
                          "unchanged shape) within include= / outside exclude=")
    contrib = block_contributions(model, candidates, data if data is not None else (x,), config.batches,
                                  config.batch_size)
    graph = ChannelGraph(model, x)
    report = {"contributions": contrib}
    if isinstance(config.scope, LatencyAware):  # least contribution per millisecond saved goes first
        ms = block_latency(model, candidates, config.scope)
        report["block_ms"] = ms
        ranked = sorted(candidates, key=lambda n: contrib[n] / max(ms[n], 1e-9))
    else:
        ranked = sorted(candidates, key=contrib.__getitem__)
    if config.budget is not None:
        chosen = _within_budget(model, graph, candidates, ranked, config)
    elif config.blocks is not None:
        if config.blocks > len(ranked):
            raise ConfigError(f"BlockPruning.blocks={config.blocks} but only {len(ranked)} blocks can be removed "
                              f"({', '.join(ranked)}); the best reachable is blocks={len(ranked)}")
        chosen = ranked[:config.blocks]
    else:
        chosen = [n for n in ranked if contrib[n] < config.epsilon]
    plan = PrunePlan(replace={n: candidates[n][1] for n in chosen})
    before = graph.cost(None)
    if plan_path is not None:
        plan.save(plan_path, force=force)
    plan.apply(model)
    after = ChannelGraph(model, x).cost(None)
    log.info("depth pruning removed %s (contributions %s)", chosen, {n: round(contrib[n], 4) for n in chosen})
    return PruneResult(plan, before, after, report)


@PRUNE.register(BlockPruning)
def _block_pruning(model, config, report, *, data=None, example_inputs=None, loss_fn=None):
    report_plan(report, prune_blocks(model, config, example_inputs=example_inputs, data=data))
