import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netcompress.prune import (NM, OBD, OBS, SNIP, APoZ, Global, GraSP, Layerwise, Magnitude, Neurons, Random,
                               Unstructured, masked_targets, prune_, select, sparsity)
from netcompress.prune.second_order import BlockInverse, per_sample_grads
from netcompress.prune.structured import L1, L2, BNScale, ChannelPruning, Taylor

CRITERIA = [Magnitude(), Magnitude(p=2), Random(seed=1), SNIP(samples=128), GraSP(samples=128, temperature=1.0),
            OBD(samples=128), OBS(samples=128, steps=2, block_size=32)]


@pytest.mark.parametrize("scope", [Layerwise(), Global()], ids=["layerwise", "global"])
@pytest.mark.parametrize("crit", CRITERIA, ids=[repr(c) for c in CRITERIA])
def test_every_criterion_composes_with_every_scope(crit, scope, trained_mlp, digits8):
    m = copy.deepcopy(trained_mlp)
    prune_(m, Unstructured(sparsity=0.75, criterion=crit, scope=scope), data=digits8.train)
    ts = list(masked_targets(m))
    assert len(ts) == 3
    if isinstance(scope, Layerwise):
        for t in ts:
            assert float((t.effective() == 0).float().mean()) == pytest.approx(0.75, abs=1e-2)
    assert sparsity(m) == pytest.approx(0.75, abs=2e-3)


def test_nm_two_of_four(trained_mlp, digits8):
    m = copy.deepcopy(trained_mlp)
    prune_(m, Unstructured(criterion=OBD(samples=64), granularity=NM(2, 4), exclude=("net.5",)), data=digits8.train)
    for t in masked_targets(m):
        groups = (t.effective() != 0).reshape(t.effective().shape[0], -1, 4).sum(-1)
        assert (groups == 2).all()


def test_apoz_prunes_dead_neurons_first_with_bias(digits8):
    lin1, lin2 = nn.Linear(64, 6), nn.Linear(6, 10)
    with torch.no_grad():
        lin1.weight[2].zero_()
        lin1.bias[2] = -1.0  # unit 2 never fires: APoZ = 100%
    m = nn.Sequential(nn.Flatten(), lin1, nn.ReLU(), lin2)
    prune_(m, Unstructured(sparsity=1 / 6, criterion=APoZ(samples=200), granularity=Neurons(), include=("1",)),
           data=digits8.train.tensors[0])
    assert (m[1].weight[2] == 0).all() and m[1].bias[2] == 0
    assert int((m[1].weight.abs().sum(1) == 0).sum()) == 1


def test_snip_scores_are_abs_weight_times_grad(trained_mlp, digits8):
    m = copy.deepcopy(trained_mlp)
    x, y = digits8.train.tensors[0][:100], digits8.train.tensors[1][:100]
    ts = select(m)
    scores = SNIP(samples=100, batch_size=100).scores(m, ts, (x, y))
    m.zero_grad()
    F.cross_entropy(m(x), y).backward()
    for t, s in zip(ts, scores):
        assert torch.allclose(s, (t.module.weight * t.module.weight.grad).abs() * 100, rtol=1e-4, atol=1e-7)


def test_grasp_is_theta_times_hessian_gradient():
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    w0 = lin.weight.detach().clone()

    def loss(w):
        return F.cross_entropy(F.linear(x, w, lin.bias.detach()), y)

    g = torch.autograd.functional.jacobian(loss, w0).reshape(-1)
    h = torch.autograd.functional.hessian(loss, w0).reshape(12, 12)
    expect = (w0.reshape(-1) * (h @ g)).reshape(3, 4)
    got = GraSP(samples=16, batch_size=8, temperature=1.0).scores(lin, select(lin), (x, y))[0]
    assert torch.allclose(got, expect, rtol=1e-4, atol=1e-8)


def test_obd_is_fisher_diagonal_saliency(trained_mlp, digits8):
    m = copy.deepcopy(trained_mlp)
    x, y = digits8.train.tensors[0][:32], digits8.train.tensors[1][:32]
    ts = select(m)
    got = OBD(samples=32, chunk=8).scores(m, ts, (x, y))
    diag = [torch.zeros_like(t.original()) for t in ts]
    for i in range(32):
        m.zero_grad()
        F.cross_entropy(m(x[i:i + 1]), y[i:i + 1]).backward()
        for d, t in zip(diag, ts):
            d += t.original().grad ** 2 / 32
    for g, d, t in zip(got, diag, ts):
        assert torch.allclose(g, d * t.original() ** 2 / 2, rtol=1e-3, atol=1e-10)


def test_woodbury_block_inverse_equals_direct_inverse():
    torch.manual_seed(0)
    n, numel, block, lam = 40, 70, 16, 0.05
    grads = torch.randn(n, numel)
    inv = BlockInverse(numel, block, lam, dtype=torch.float64)
    for i in range(0, n, 7):  # rank-k chunks of 7 (the last one shorter)
        inv.add(grads[i:i + 7].double(), n)
    padded = inv.split(grads.double())  # (n, blocks, B)
    for b in range(inv.n_blocks):
        f = padded[:, b].T @ padded[:, b] / n + lam * torch.eye(block, dtype=torch.float64)
        assert torch.allclose(inv.inv[b], torch.linalg.inv(f), rtol=1e-8, atol=1e-8)


def test_obs_single_weight_update_is_hassibi_stork():
    torch.manual_seed(0)
    inv = BlockInverse(8, 8, 1.0, dtype=torch.float64)
    inv.add(torch.randn(20, 8, dtype=torch.float64), 20)
    w = torch.randn(8, dtype=torch.float64)
    q = 3
    prune = torch.zeros(8, dtype=torch.bool)
    prune[q] = True
    expect = -w[q] * inv.inv[0][:, q] / inv.inv[0][q, q]
    got = inv.update(w, prune)
    assert torch.allclose(got, expect, atol=1e-10)
    assert abs(float(w[q] + got[q])) < 1e-10  # the pruned weight lands exactly on zero


def test_per_sample_grads_match_loop(trained_mlp, digits8):
    m = copy.deepcopy(trained_mlp)
    prune_(m, Unstructured(sparsity=0.5))
    ts = list(masked_targets(m))
    x, y = digits8.train.tensors[0][:5], digits8.train.tensors[1][:5]
    got = per_sample_grads(m, ts, x, y)
    for i in range(5):
        m.zero_grad()
        F.cross_entropy(m(x[i:i + 1]), y[i:i + 1]).backward()
        for g, t in zip(got, ts):
            assert torch.allclose(g[i], t.original().grad, atol=1e-6)


def test_obs_loses_less_than_magnitude_and_obd(trained_mlp, digits8):
    """The theory's ordering E(mag) >= E(OBD) >= E(OBS), on the training loss at 60% global sparsity."""
    x, y = digits8.train.tensors
    losses = {}
    for crit in (Magnitude(), OBD(samples=512), OBS(samples=512, steps=4, block_size=64)):
        m = copy.deepcopy(trained_mlp)
        prune_(m, Unstructured(sparsity=0.6, criterion=crit, scope=Global()), data=(x, y))
        with torch.no_grad():
            losses[type(crit).__name__] = float(F.cross_entropy(m(x), y))
    assert losses["OBS"] < losses["Magnitude"]
    assert losses["OBS"] < losses["OBD"]


def test_obs_woodbury_and_direct_give_the_same_pruning(trained_mlp, digits8):
    x, y = digits8.train.tensors
    ts_models = []
    for woodbury in (False, True):
        m = copy.deepcopy(trained_mlp)
        # one chunk, so both derive the same damping lambda from the same samples
        crit = OBS(samples=256, chunk=256, steps=1, block_size=32, woodbury=woodbury, damping=1e-2)
        invs = crit.inverse(m, select(m), (x, y))
        ts_models.append((m, invs))
        prune_(m, Unstructured(sparsity=0.5, criterion=crit), data=(x, y))
    (a, inv_a), (b, inv_b) = ts_models
    for ia, ib in zip(inv_a, inv_b):
        scale = ia.inv.abs().max()
        assert float((ia.inv - ib.inv).abs().max() / scale) < 1e-3
    for ta, tb in zip(masked_targets(a), masked_targets(b)):
        agree = float((ta.mask() == tb.mask()).float().mean())
        assert agree > 0.99


# one protocol: every criterion ranks weights, and channels by the same scores reduced over a group's slices
ALL = [Magnitude(), SNIP(samples=64), GraSP(samples=64, temperature=1.0), OBD(samples=64), APoZ(samples=64),
       OBS(samples=64, block_size=16, steps=1), L1(), L2(), Taylor(batches=2, batch_size=32), Random(seed=3)]


@pytest.mark.parametrize("crit", ALL, ids=lambda c: type(c).__name__)
def test_every_criterion_prunes_weights_and_channels(crit, trained_mlp, digits8):
    data = (digits8.train.tensors[0][:128], digits8.train.tensors[1][:128])
    m = copy.deepcopy(trained_mlp)
    prune_(m, Unstructured(sparsity=0.5, criterion=crit, scope=Global()), data=data)
    assert sparsity(m) == pytest.approx(0.5, abs=2e-3)
    m = copy.deepcopy(trained_mlp)
    report = prune_(m, ChannelPruning(ratio=0.25, importance=crit), data=data, example_inputs=data[0][:2])
    assert [lin.out_features for lin in m.modules() if isinstance(lin, nn.Linear)] == [48, 24, 10]
    assert report.changed and m(data[0]).shape == (128, 10)


def test_bn_scale_is_a_score_on_the_bn_weight():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.5, -0.1, 2.0, 0.05]))
    prune_(model, ChannelPruning(ratio=0.5, importance=BNScale()), example_inputs=torch.randn(2, 1, 8, 8))
    assert model[1].weight.tolist() == [0.5, 2.0]
