"""Learned importance: slimming penalty and straight-through channel gates, through the Trainer."""
import copy

import pytest
import torch

import netcompress as nc
from netcompress.core.errors import ConfigError
from netcompress.prune.structured import BNScale, ChannelPruning, Global, MACs, prune_channels
from netcompress.prune.structured.learned import ChannelGates, SlimmingPenalty
from netcompress.train import TrainConfig, Trainer

X = torch.randn(2, 1, 28, 28)


def small():
    return nc.models.create_model("vgg_small", in_channels=1, input_size=28, width=8)


def cfg(**kw):
    return TrainConfig(**{**dict(epochs=1, batch_size=64, lr=0.05, optimizer="sgd", scheduler=None, seed=0,
                                 progress=False), **kw})


def test_slimming_shrinks_bn_scales_and_prunes_to_budget(digits28):
    plain, slim = small(), small()
    slim.load_state_dict(plain.state_dict())
    Trainer(plain, digits28.train, cfg()).fit()
    Trainer(slim, digits28.train, cfg(), callbacks=[SlimmingPenalty(0.2)]).fit()
    l1 = lambda m: sum(b.weight.abs().sum().item() for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d))  # noqa: E731
    assert l1(slim) < 0.8 * l1(plain)
    r = prune_channels(slim, ChannelPruning(budget=MACs(0.5), importance=BNScale(), scope=Global()), X)
    assert 2.0 <= r.mac_ratio < 2.4


def test_gates_are_binary_and_reach_target(digits28):
    model = small()
    gates = ChannelGates(model, X, target=MACs(0.5), strength=5.0, lr=0.1)
    assert float(gates.expected_macs(hard=True).detach()) == pytest.approx(1.0)
    Trainer(model, digits28.train, cfg(epochs=2), callbacks=[gates]).fit()
    assert not gates._hooks  # detached after fit
    hard = float(gates.expected_macs(hard=True).detach())
    assert 0.5 <= hard < 0.9  # the penalty closed gates, no ratios given, and never past the target
    # the gated network equals the network with closed-gate channels removed
    graph = gates.graph
    with torch.no_grad():
        for grp in graph.groups:  # a fully closed layer cannot be removed: reopen its best channel
            units = graph.unit_of[[u[0] for u in grp.units]]
            if (gates.logits[units] <= 0).all():
                gates.logits[units[gates.logits[units].argmax()]] = 1.0
    gates.attach()
    with torch.no_grad():
        gated_out = model.eval()(X)
    gates.detach()
    closed = (gates.logits <= 0).numpy()
    pruned = copy.deepcopy(model)
    plan = graph.plan((~graph.channel_keep(closed)).nonzero()[0])
    plan.apply(pruned)
    assert (pruned.eval()(X) - gated_out).abs().max() <= 1e-4
    r = prune_channels(model, ChannelPruning(budget=MACs(0.5), importance=gates.importance(), scope=Global()), X)
    assert r.mac_ratio >= 2.0


def test_gates_hold_the_budget_when_pushed_past_it(digits28):
    """A penalty far too strong for the target drives every logit down; the hard MACs still end at the
    target (not at 0.001, as before the hold), and the learned order of the logits is kept."""
    model = small()
    gates = ChannelGates(model, X, target=MACs(0.5), strength=500.0, lr=0.5)
    Trainer(model, digits28.train, cfg(epochs=1), callbacks=[gates]).fit()
    hard = float(gates.expected_macs(hard=True).detach())
    assert 0.5 <= hard <= 0.6
    with torch.no_grad():
        gates.logits -= 10.0  # everything closed: the hold reopens the highest, in order
        order = gates.logits.argsort(descending=True)
        gates.hold_budget()
    opened = gates.logits > 0
    assert float(gates.expected_macs(hard=True).detach()) >= 0.5
    assert opened[order[: int(opened.sum())]].all()


def test_bad_arguments():
    with pytest.raises(ConfigError, match="strength"):
        SlimmingPenalty(-1)
    with pytest.raises(ConfigError, match="target must be MACs"):
        ChannelGates(small(), X, target=0.5)
