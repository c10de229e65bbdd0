"""The per-layer-type handler registry: a user's own layer joins it; a layer without a handler is locked and
reported, never a traceback."""
import copy
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netcompress as nc
from netcompress.core.errors import ModelError
from netcompress.graph import ChannelGraph, Handler, LinearHandler, handler_for, register_handler
from netcompress.prune.structured import BlockPruning, ChannelPruning, prune_channels


def _raw_linear(name: str) -> type:
    """A layer of the user's own: a raw nn.Parameter used through F.linear."""

    def __init__(self, n_in, n_out):
        nn.Module.__init__(self)
        self.weight = nn.Parameter(torch.randn(n_out, n_in) / n_in ** 0.5)
        self.bias = nn.Parameter(torch.randn(n_out))

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    return type(name, (nn.Module,), {"__init__": __init__, "forward": forward})


RawLinear, Unhandled = _raw_linear("RawLinear"), _raw_linear("Unhandled")  # only RawLinear gets a handler


def mlp(layer, widths=(16, 24, 20, 12, 6)):
    mods = []
    for a, b in zip(widths[:-1], widths[1:]):
        mods += [layer(a, b), nn.ReLU()]
    return nn.Sequential(*mods[:-1])


def test_registered_custom_layer_is_pruned_physically():
    register_handler(RawLinear, LinearHandler())
    model = mlp(RawLinear).eval()
    x = torch.randn(5, 16)
    graph = ChannelGraph(model, x)
    assert [g.sources for g in graph.groups] == [["0"], ["2"], ["4"]]
    plan = graph.plan(np.concatenate(graph.groups[1].units[:6]))
    masked, pruned = plan.zero_(copy.deepcopy(model)), plan.apply(copy.deepcopy(model))
    assert (masked(x) - model(x)).abs().max() > 1e-3
    assert (masked(x) - pruned(x)).abs().max() <= 1e-5
    assert pruned[2].weight.shape == (14, 24) and pruned[4].weight.shape == (12, 14)
    report = nc.prune_(model, ChannelPruning(ratio=0.5), example_inputs=x)
    assert [tuple(m.weight.shape) for m in model if isinstance(m, RawLinear)] == [(12, 16), (10, 12), (6, 10), (6, 6)]
    assert not report.skipped and model(x).shape == (5, 6)


class TransposedHandler(Handler):
    """A handler written from scratch: the layer keeps its weight as (in, out) in ``w``."""

    roles = ("in", "out")

    def slots(self, module, role):
        return {"out": (("w", 1), ("b", 0)), "in": (("w", 0),)}[role]

    def join(self, graph, node, name, module):
        labels, _ = graph.channels_in(node, dim=-1, size=self.get_in_channels(module))
        out = graph.produce(name, self.get_out_channels(module))
        graph.use(name, "in", labels)
        graph.use(name, "out", out)
        graph.add_layer(node, name, labels, out, kernel=1, spatial=1, bias=True)
        graph.emit(node, out, len(graph.shape(node)) - 1)


class Transposed(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.w, self.b = nn.Parameter(torch.randn(n_in, n_out)), nn.Parameter(torch.randn(n_out))

    def forward(self, x):
        return x @ self.w + self.b


def test_handler_written_from_scratch():
    register_handler(Transposed, TransposedHandler())
    model = mlp(Transposed).eval()
    x = torch.randn(3, 16)
    dense = copy.deepcopy(model)
    r = prune_channels(model, ChannelPruning(ratio=0.25), x)
    assert [m.w.shape[1] for m in model if isinstance(m, Transposed)] == [18, 15, 9, 6]
    assert r.after["macs"] < r.before["macs"] == sum(m.w.numel() for m in dense if isinstance(m, Transposed))
    twin = r.plan.zero_(dense)  # the plan's masked twin gives what the pruned model gives
    assert (twin(x) - model(x)).abs().max() <= 1e-4


def test_handler_vocabulary_on_builtin_layers():
    conv, convt = nn.Conv2d(4, 6, 3), nn.ConvTranspose2d(4, 6, 3)
    h = handler_for(conv)
    assert (h.get_in_channels(conv), h.get_out_channels(conv)) == (4, 6)
    h.prune_out_channels(conv, [0, 2, 5])
    h.prune_in_channels(conv, [1, 3])
    assert conv.weight.shape == (3, 2, 3, 3) and conv.out_channels == 3 and conv.in_channels == 2
    handler_for(convt).prune_out_channels(convt, [4])
    assert convt.weight.shape == (4, 1, 3, 3) and convt.out_channels == 1
    assert handler_for(nn.LazyLinear(3)) is handler_for(nn.Linear(2, 3))  # found through the MRO
    with pytest.raises(ValueError, match=r"Handler instance"):
        register_handler(nn.Linear, LinearHandler)


def test_layer_without_handler_is_locked_reported_and_refused_by_name(caplog):
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), Unhandled(32, 24), nn.ReLU(),
                          nn.Linear(24, 20), nn.ReLU(), nn.Linear(20, 6)).eval()
    x = torch.randn(4, 16)
    graph = ChannelGraph(model, x)
    assert graph.opaque == {"4": "Unhandled"} and [g.sources for g in graph.groups] == [["0"], ["6"]]
    with caplog.at_level(logging.WARNING, logger="netcompress"):
        report = nc.prune_(model, ChannelPruning(ratio=0.5), example_inputs=x)
    assert [(s.name, s.layer_type) for s in report.skipped] == [("4", "Unhandled")]
    assert "unsupported layer type Unhandled" in report.skipped[0].reason
    assert any(r.name == "netcompress" and "skips 4" in r.getMessage() for r in caplog.records)
    assert model[4].weight.shape == (24, 32) and model[0].out_features == 16 and model(x).shape == (4, 6)
    with pytest.raises(ModelError, match=r"layer '4' is a Unhandled, which ChannelPruning does not support"):
        nc.prune_(model, ChannelPruning(ratio=0.5, include=("4",)), example_inputs=x)


class Block(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.conv, self.bn, self.extra = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), layer

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)) * self.extra(x))


class Gain(nn.Module):
    """Another unhandled layer: one learned gain."""

    def __init__(self):
        super().__init__()
        self.g = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.g


def test_block_pruning_reports_the_unhandled_layer(caplog):
    def model():
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), Block(Gain()), Block(Gain()), nn.Flatten(),
                             nn.Linear(4 * 6 * 6, 3)).eval()

    x = torch.randn(2, 1, 6, 6)
    with caplog.at_level(logging.WARNING, logger="netcompress"):
        report = nc.prune_(model(), BlockPruning(blocks=1), example_inputs=x)
    assert sorted(s.name for s in report.skipped) == ["1.extra", "2.extra"]
    assert any("BlockPruning skips 1.extra" in r.getMessage() for r in caplog.records)
    assert len(report.details["plan"].replace) == 1
    with pytest.raises(ModelError, match=r"'2.extra' is a Gain, which the channel graph does not support"):
        nc.prune_(model(), BlockPruning(blocks=1, include=("2.extra",)), example_inputs=x)
