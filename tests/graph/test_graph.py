"""The channel graph: costs, couplings (residual adds, concat offsets, flatten, depthwise, shared modules).

That the zeroed model equals the physically pruned one is checked in tests/invariants."""
import copy

import numpy as np
import torch
from graph_archs import DenseBlockNet, random_units
from torch import nn

from netcompress.graph import ChannelGraph
from netcompress.models import create_model

def test_cost_model_matches_measured_macs():
    from netcompress.measure import analyze

    x = torch.randn(1, 1, 16, 16)
    model = create_model("resnet20", in_channels=1, input_size=16).eval()
    graph = ChannelGraph(model, x)
    units = random_units(graph, 0.5)
    pruned_units = np.zeros(len(graph.group_of_unit), dtype=bool)
    pruned_units[np.unique(graph.unit_of[units])] = True
    predicted = graph.cost(pruned_units)
    pruned = graph.plan(units).apply(copy.deepcopy(model))
    measured = analyze(pruned, x).totals
    assert predicted["macs"] == measured["macs"]
    assert predicted["params"] == measured["params"]


def test_residual_members_pruned_together():
    model = create_model("resnet20", in_channels=1, input_size=16)
    graph = ChannelGraph(model, torch.randn(2, 1, 16, 16))
    stage1 = next(g for g in graph.groups if "conv1" in g.sources)
    assert {"conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"} <= set(stage1.sources)
    modules = {m for m, _, _ in stage1.members}
    assert {"bn1", "layer1.0.bn2", "layer2.0.conv1", "layer2.0.shortcut.0"} <= modules


def test_concat_offsets():
    model = DenseBlockNet().eval()
    x = torch.randn(2, 1, 8, 8)
    graph = ChannelGraph(model, x)
    grp = next(g for g in graph.groups if g.sources == ["layers.1.2"])
    plan = graph.plan(grp.units[2])
    # layers.1.2 is the 3rd tensor in the concat feeding layers.2 (offset 8 + 6) and the transition (same)
    assert plan.modules["layers.2.2"]["in"] == [i for i in range(20) if i != 8 + 6 + 2]
    assert plan.modules["transition.2"]["in"] == [i for i in range(26) if i != 8 + 6 + 2]
    assert plan.modules["layers.2.0"]["channel"] == [i for i in range(20) if i != 16]


def test_flatten_expands_channels_over_space():
    model = create_model("lenet5")
    graph = ChannelGraph(model, torch.randn(2, 1, 28, 28))
    grp = next(g for g in graph.groups if g.sources == ["features.2"])
    plan = graph.plan(grp.units[3])
    kept = plan.modules["classifier.1"]["in"]
    assert len(kept) == 49 * 16 and all(not (3 * 16 <= i < 4 * 16) for i in kept)


def test_depthwise_follows_and_grouped_is_locked():
    model = nn.Sequential(nn.Conv2d(1, 8, 1), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 8, 1),
                          nn.Conv2d(8, 8, 3, groups=2), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(2, 1, 6, 6)
    model(x)
    graph = ChannelGraph(model, x)
    assert [g.sources for g in graph.groups] == [["0"]]  # the grouped conv locks "2" and its own output
    plan = graph.plan(graph.groups[0].units[5])
    pruned = plan.apply(copy.deepcopy(model))
    assert pruned[1].groups == pruned[1].in_channels == pruned[1].out_channels == 7
    assert pruned(x).shape == (2, 3)


def test_layernorm_over_features_is_pruned():
    model = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 3))
    x = torch.randn(4, 5, 6)
    graph = ChannelGraph(model, x)
    pruned = graph.plan(np.concatenate(graph.groups[0].units[:4])).apply(copy.deepcopy(model))
    assert pruned[1].normalized_shape == (12,) and pruned[1].weight.shape == (12,)
    assert pruned(x).shape == (4, 5, 3)


def test_shared_module_called_twice():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(1, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 2, 1)

        def forward(self, x):
            return self.c(self.b(torch.relu(self.b(self.a(x)))))

    model = Twice().eval()
    x = torch.randn(2, 1, 8, 8)
    graph = ChannelGraph(model, x)
    assert len(graph.groups) == 1 and set(graph.groups[0].sources) == {"a", "b"}
    plan = graph.plan(graph.groups[0].units[1])
    masked, pruned = plan.zero_(copy.deepcopy(model)), plan.apply(copy.deepcopy(model))
    assert (masked(x) - pruned(x)).abs().max() <= 1e-5
