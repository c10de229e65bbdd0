"""Latency budgets: table-driven greedy, checked by measurement (tiny model, loose bounds: shared CPU)."""
import copy

import pytest
import torch

import netcompress as nc
from netcompress.core.errors import ConfigError
from netcompress.graph import ChannelGraph
from netcompress.prune.structured import ChannelPruning, Latency, LatencyAware, Local, MACs, prune_channels
from netcompress.prune.structured.latency import LatencyTable

X = torch.randn(2, 1, 16, 16)


def vgg():
    return nc.models.create_model("vgg_small", in_channels=1, input_size=16, width=16).eval()


def test_table_is_monotone_and_interpolates():
    model = vgg()
    graph = ChannelGraph(model, X)
    table = LatencyTable(batch_size=4, repeats=3, round_to=8).build(model, graph)
    layer = graph.layers[2]
    n_in, n_out = len(layer.in_labels), len(layer.out_labels)
    full = table.layer_ms(layer.module, n_in, n_out)
    assert 0 < table.layer_ms(layer.module, n_in // 2, n_out // 2) <= full
    assert table.predict(graph) >= full


def test_latency_budget_reports_predicted_and_measured():
    model = vgg()
    r = prune_channels(model, ChannelPruning(budget=Latency(1.5, batch_size=8, repeats=5, rounds=2)), X)
    assert set(r.latency) >= {"predicted_speedup", "measured_speedup", "dense_ms", "pruned_ms"}
    assert r.latency["predicted_speedup"] >= 1.5
    assert r.mac_ratio > 1.2 and model(X).shape == (2, 10)


def test_unreachable_latency_names_best():
    model = vgg()
    with pytest.raises(ConfigError, match=r"cannot be met.*best reachable is about Latency\(speedup="):
        prune_channels(model, ChannelPruning(budget=Latency(500.0, batch_size=4, repeats=3)), X)
    assert model.features[0].out_channels == 16


def test_bad_latency_config():
    with pytest.raises(ConfigError, match=r"Latency.speedup must be a number > 1"):
        Latency(0.5)
    with pytest.raises(ConfigError, match=r"Latency.batch_size"):
        Latency(2.0, batch_size=0)


def test_latency_aware_macs_budget_met_and_masked_equals_removed():
    model = vgg()
    with torch.no_grad():  # non-trivial BN so zeroed channels are visible downstream
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.bias.normal_()
    dense = copy.deepcopy(model)
    r = prune_channels(model, ChannelPruning(budget=MACs(0.5), scope=LatencyAware(batch_size=4, repeats=3),
                                             round_to=4), X)
    assert r.after["macs"] <= 0.5 * r.before["macs"] and r.latency["predicted_speedup"] > 1
    twin = r.plan.zero_(copy.deepcopy(dense))
    assert (twin(X) - dense(X)).abs().max() > 1e-3
    assert (twin(X) - model(X)).abs().max() <= 1e-5


def test_latency_aware_needs_a_macs_or_params_budget():
    with pytest.raises(ConfigError, match=r"LatencyAware\(\) needs budget=MACs"):
        ChannelPruning(ratio=0.5, scope=LatencyAware())
    with pytest.raises(ConfigError, match=r"LatencyAware.batch_size"):
        LatencyAware(batch_size=0)


def test_latency_aware_bad_runtime_scale_and_max_ratio_are_named():
    with pytest.raises(ConfigError, match=r"LatencyAware.runtime must be one of 'eager', 'onnxruntime', 'both'; got"):
        LatencyAware(runtime="tensorrt")
    with pytest.raises(ConfigError, match=r"LatencyAware.importance_scale must be one of 'share', 'mean'"):
        LatencyAware(importance_scale="sum")
    with pytest.raises(ConfigError, match=r"ChannelPruning.max_ratio must be a number in \(0, 1\]"):
        ChannelPruning(ratio=0.3, max_ratio=0.0)


@pytest.mark.parametrize("scope", [Local(), LatencyAware(batch_size=4, repeats=3, importance_scale="mean")])
def test_max_ratio_caps_every_group(scope):
    """No layer loses more than max_ratio of its channels, whatever the budget pushes for."""
    model = vgg()
    kw = dict(budget=MACs(0.5)) if isinstance(scope, LatencyAware) else dict(ratio=0.9)
    prune_channels(model, ChannelPruning(scope=scope, max_ratio=0.5, **kw), X)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    dense = [m for m in vgg().modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.out_channels >= d.out_channels // 2 for c, d in zip(convs, dense))
    assert any(c.out_channels < d.out_channels for c, d in zip(convs, dense))


def test_unreachable_budget_under_max_ratio_names_the_cap():
    with pytest.raises(ConfigError, match=r"cannot be met.*\(max_ratio=0.1\).*best reachable is MACs\("):
        prune_channels(vgg(), ChannelPruning(budget=MACs(0.3), max_ratio=0.1), X)


def test_group_corrections_vanish_at_dense_and_keep_prediction_positive():
    model = vgg()
    graph = ChannelGraph(model, X)
    xb = X[:1].expand(4, *X.shape[1:]).contiguous()
    table = LatencyTable(batch_size=4, repeats=3, round_to=4).build(model, graph).calibrate(graph, 1.0)
    before = table.predict(graph)
    table.calibrate_groups(model, graph, xb)
    assert set(table.corrections) == set(range(len(graph.groups)))
    assert table.predict(graph) == pytest.approx(before)  # every correction is 0 at the dense count
    for g, (ks, cs) in table.corrections.items():
        assert ks == sorted(ks) and ks[-1] == len(graph.groups[g]) and cs[-1] == 0.0
    everything = graph.group_of_unit >= 0
    assert table.predict(graph, everything) > 0


def test_latency_aware_on_both_runtimes_meets_budget():
    """Tables and corrections measured in torch eager and in onnxruntime sessions, their mean steering."""
    runtime = "both"
    model = vgg()
    r = prune_channels(model, ChannelPruning(budget=MACs(0.5), round_to=4, max_ratio=0.75,
                                             scope=LatencyAware(batch_size=4, repeats=3, runtime=runtime)), X)
    assert r.after["macs"] <= 0.5 * r.before["macs"] and r.latency["runtime"] == runtime
    assert set(r.latency["predicted_speedup_per_runtime"]) == {"eager", "onnxruntime"}
    assert all(s > 1 for s in r.latency["predicted_speedup_per_runtime"].values())
    assert model(X).shape == (2, 10)


def test_refine_keeps_the_budget_and_never_predicts_slower():
    """Moving channel steps between groups after the greedy: the budget and the max_ratio floor still hold,
    and the table's prediction is no worse than the greedy's own."""
    model = vgg()
    runs: dict = {}
    for refine in (False, True):
        m = copy.deepcopy(model)
        scope = LatencyAware(batch_size=4, repeats=3, importance_scale="mean", refine=refine)
        r = prune_channels(m, ChannelPruning(budget=MACs(0.5), scope=scope, round_to=4, max_ratio=0.5), X)
        assert r.after["macs"] <= 0.5 * r.before["macs"]
        convs = [c.out_channels for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
        assert all(c >= d // 2 for c, d in zip(convs, (16, 16, 32, 32, 64, 64)))
        runs[refine] = r
    assert m(X).shape == (2, 10)
    refined = runs[True].latency
    assert refined["predicted_speedup"] >= refined["greedy_predicted_speedup"]
    assert "greedy_predicted_speedup" not in runs[False].latency
