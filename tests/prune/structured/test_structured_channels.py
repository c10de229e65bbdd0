"""Channel pruning through prune_: budgets met, bad input refused with the model untouched."""
import copy

import pytest
import torch

import netcompress as nc
from netcompress.core.errors import ConfigError, DataError, OutputExistsError
from netcompress.graph import PrunePlan
from netcompress.measure import analyze
from netcompress.prune.structured import (BNScale, ChannelPruning, Global, L1, L2, Local, MACs, Params, Random,
                                          Taylor, prune_channels)

X = torch.randn(2, 1, 16, 16)


def resnet():
    return nc.models.create_model("resnet20", in_channels=1, input_size=16)


def same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values())) and \
        list(a.state_dict()) == list(b.state_dict())


@pytest.mark.parametrize("importance", [L1(), L2(), BNScale(), Random(), Taylor(batches=2, batch_size=8)],
                         ids=lambda i: type(i).__name__)
@pytest.mark.parametrize("scope", [Local(), Global()], ids=lambda s: type(s).__name__)
def test_mac_budget_met_and_measured(importance, scope, digits28):
    model = nc.models.create_model("resnet20", in_channels=1, input_size=28, width=8)
    x = torch.randn(2, 1, 28, 28)
    dense_macs = analyze(model, x).totals["macs"]
    nc.prune_(model, ChannelPruning(budget=MACs(0.5), importance=importance, scope=scope),
              data=digits28.train, example_inputs=x)
    ratio = analyze(model, x).totals["macs"] / dense_macs
    assert 0.45 <= ratio <= 0.5  # met, and not overshot by much
    assert model(x).shape == (2, 10)


def test_params_budget_and_ratio():
    model = resnet()
    n = sum(p.numel() for p in model.parameters())
    r = prune_channels(model, ChannelPruning(budget=Params(0.3)), X)
    assert sum(p.numel() for p in model.parameters()) <= 0.3 * n
    assert r.after["params"] <= r.before["params"]
    m2 = resnet()
    prune_channels(m2, ChannelPruning(ratio=0.5), X)
    assert m2.conv1.out_channels == 8 and m2.layer3[0].conv1.out_channels == 32


def test_round_to_multiple():
    model = resnet()
    prune_channels(model, ChannelPruning(ratio=0.4, round_to=8), X)
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w % 8 == 0 for w in widths) and min(widths) < 16


def test_keep_protects_a_layer():
    model = resnet()
    prune_channels(model, ChannelPruning(ratio=0.5, exclude=("layer1.0.conv1", "layer3")), X)
    assert model.layer1[0].conv1.out_channels == 16
    assert model.layer1[1].conv1.out_channels == 8
    assert all(m.out_channels == 64 for m in model.layer3.modules() if isinstance(m, torch.nn.Conv2d))


def test_l1_removes_the_smallest_filters():
    model = nn_seq = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))
    with torch.no_grad():
        for i, s in enumerate([3.0, 0.1, 2.0, 0.2]):
            nn_seq[0].weight[i].fill_(s)
    prune_channels(model, ChannelPruning(ratio=0.5, importance=L1()), torch.randn(2, 1, 8, 8))
    assert torch.allclose(model[0].weight[:, 0, 0, 0], torch.tensor([3.0, 2.0]))


@pytest.mark.parametrize("make, match", [
    (lambda: ChannelPruning(ratio=1.0), r"ratio must be a number in \[0, 1\); got 1.0"),
    (lambda: ChannelPruning(ratio=-0.1), r"ratio"),
    (lambda: ChannelPruning(), r"exactly one of ratio"),
    (lambda: ChannelPruning(ratio=0.2, budget=MACs(0.5)), r"exactly one of ratio"),
    (lambda: MACs(0.0), r"MACs.fraction"),
    (lambda: ChannelPruning(ratio=0.2, round_to=0), r"round_to"),
    (lambda: ChannelPruning(ratio=0.2, exclude=3), r"exclude must be a list of strings"),
    (lambda: ChannelPruning(ratio=0.2, scope="globl"), r"scope: unknown ChannelScope 'globl'. Did you mean 'Global'\? Allowed: Global, LatencyAware, Local"),
])
def test_bad_config(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_missing_keep_layer_is_named_and_model_untouched():
    model, ref = resnet(), resnet()
    ref.load_state_dict(model.state_dict())
    with pytest.raises(ConfigError, match=r"pattern 'layer1.0.conv9' matches no layer. Did you mean 'layer1.0.conv[12]'"):
        nc.prune_(model, ChannelPruning(ratio=0.5, exclude=("layer1.0.conv9",)), example_inputs=X)
    assert same(model, ref)


def test_unreachable_budget_says_best_reachable_and_model_untouched():
    model, ref = resnet(), resnet()
    ref.load_state_dict(model.state_dict())
    with pytest.raises(ConfigError, match=r"cannot be met.*best reachable is MACs\(0\.\d+\)"):
        nc.prune_(model, ChannelPruning(budget=MACs(0.001)), example_inputs=X)
    assert same(model, ref)


def test_taylor_without_data_and_no_inputs():
    with pytest.raises(DataError, match=r"Taylor importance needs data="):
        prune_channels(resnet(), ChannelPruning(ratio=0.5, importance=Taylor()), X)
    with pytest.raises(DataError, match=r"example_inputs="):
        prune_channels(resnet(), ChannelPruning(ratio=0.5))


def test_plan_file_replays_and_is_not_overwritten(tmp_path):
    model = resnet().eval()
    path = tmp_path / "plan.json"
    prune_channels(model, ChannelPruning(budget=MACs(0.5), scope=Global()), X, plan_path=path)
    weights = tmp_path / "w.safetensors"
    nc.core.io.save_weights(model, weights)
    rebuilt = PrunePlan.load(path).apply(resnet()).eval()
    nc.core.io.load_weights_into(rebuilt, weights)
    assert torch.equal(rebuilt(X), model(X))
    other = resnet()
    before = copy.deepcopy(other.state_dict())
    with pytest.raises(OutputExistsError):
        prune_channels(other, ChannelPruning(ratio=0.2), X, plan_path=path)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


def test_pruned_model_exports_to_onnx(tmp_path):
    from netcompress.export import to_onnx

    model = nc.models.create_model("vgg_small", in_channels=1, input_size=16, width=8).eval()
    prune_channels(model, ChannelPruning(budget=MACs(0.5)), X)
    to_onnx(model, X, tmp_path / "pruned.onnx")  # verify=True: onnxruntime output checked against torch
    assert (tmp_path / "pruned.onnx").stat().st_size > 0
