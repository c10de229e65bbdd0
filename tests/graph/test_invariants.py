"""Invariant: the model with pruned channels zeroed == the physically pruned model (DESIGN.md 3.5)."""
import copy

import numpy as np
import pytest
import torch
from archs import DenseBlockNet, Functional, MobileNetV2ish, UNet
from torch import nn

from netcompress.graph import ChannelGraph, PrunePlan
from netcompress.models import create_model

# name, factory, input shape, max abs diff allowed
CASES = [
    ("resnet20 (add)", lambda: create_model("resnet20", in_channels=1, input_size=16), (3, 1, 16, 16), 1e-5),
    ("densenet block (concat)", DenseBlockNet, (3, 1, 8, 8), 1e-5),
    ("mobilenetv2 block (depthwise + inverted residual)", MobileNetV2ish, (3, 1, 16, 16), 1e-5),
    ("unet (concat skips, transposed conv)", UNet, (3, 1, 16, 16), 1e-5),
    ("functional ops (cat, view, F.relu, add)", Functional, (3, 1, 14, 14), 1e-5),
    ("mlp", lambda: create_model("mlp", hidden=(40, 30)), (3, 1, 28, 28), 1e-5),
    ("vgg_small (flatten -> linear)", lambda: create_model("vgg_small", in_channels=1, input_size=16, width=8),
     (3, 1, 16, 16), 1e-5),
]


def _warm_bn(model, x):
    """Give BatchNorm non-trivial running statistics, so that BN bias matters in eval."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x * 2 + 0.5)
    return model.eval()


def _random_units(graph, frac=0.4, seed=0):
    rng = np.random.default_rng(seed)
    picked = []
    for grp in graph.groups:
        n = max(1, int(len(grp) * frac))
        if len(grp) - n < 1:
            continue
        picked += [grp.units[i] for i in rng.choice(len(grp), n, replace=False)]
    return np.concatenate(picked)


@pytest.mark.parametrize("name,factory,shape,tol", CASES, ids=[c[0] for c in CASES])
def test_zeroed_equals_removed(name, factory, shape, tol, tmp_path):
    torch.manual_seed(0)
    x = torch.randn(*shape)
    model = _warm_bn(factory(), x)
    before = model(x)
    graph = ChannelGraph(model, x)
    assert graph.groups, "nothing prunable found"
    plan = graph.plan(_random_units(graph))
    masked, pruned = plan.zero_(copy.deepcopy(model)), plan.apply(copy.deepcopy(model))
    with torch.no_grad():
        out_masked, out_pruned = masked(x), pruned(x)
    assert out_pruned.shape == before.shape
    assert (out_masked - before).abs().max() > 1e-3, "zeroing changed nothing: the test would prove nothing"
    assert (out_masked - out_pruned).abs().max() <= tol
    n_dense, n_pruned = (sum(p.numel() for p in m.parameters()) for m in (model, pruned))
    assert n_pruned < 0.8 * n_dense
    assert graph.cost(None)["params"] <= n_dense
    # replay: plan JSON + state_dict rebuild the pruned model from a fresh dense one
    plan.save(tmp_path / "plan.json")
    rebuilt = PrunePlan.load(tmp_path / "plan.json").apply(factory()).eval()
    rebuilt.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(x), out_pruned)


def test_cost_model_matches_measured_macs():
    from netcompress.measure import analyze

    x = torch.randn(1, 1, 16, 16)
    model = create_model("resnet20", in_channels=1, input_size=16).eval()
    graph = ChannelGraph(model, x)
    units = _random_units(graph, 0.5)
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
