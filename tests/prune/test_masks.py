"""Mask invariants, one table: (name, check, tolerance)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netcompress.measure import count_nonzero
from netcompress.models import create_model
from netcompress.prune import (Global, Unstructured, bake_, get_mask, is_masked, masked_targets, prune_, select,
                               set_mask, sparsity)


def _model():
    torch.manual_seed(0)
    return create_model("lenet5", in_channels=1, input_size=28)


def _fwd_bwd(model, x, y):
    model.zero_grad()
    out = model(x)
    F.cross_entropy(out, y).backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def ones_mask_changes_nothing(tol):
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    a = _model()
    b = copy.deepcopy(a)
    for t in select(b):
        set_mask(t.module, "weight", torch.ones_like(t.original()))
    out_a, g_a = _fwd_bwd(a, x, y)
    out_b, g_b = _fwd_bwd(b, x, y)
    assert torch.allclose(out_a, out_b, atol=tol)
    for n, g in g_a.items():
        nb = n.replace("weight", "parametrizations.weight.original") if n.endswith("weight") else n
        assert torch.allclose(g, g_b[nb], atol=tol), n


def param_identity_stable_and_optimizer_works(tol):
    m = _model()
    before = {id(p) for p in m.parameters()}
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    prune_(m, Unstructured(sparsity=0.7))
    assert {id(p) for p in m.parameters()} == before
    masks = {t.fqn: t.mask().clone() for t in masked_targets(m)}
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    start = copy.deepcopy(m.state_dict())
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
    for t in masked_targets(m):
        eff = t.effective()
        assert float(eff[~masks[t.fqn]].abs().max()) <= tol  # masked weights stay exactly zero
    changed = any(not torch.equal(v, m.state_dict()[k]) for k, v in start.items() if "original" in k)
    assert changed  # the optimizer still trains the kept weights


def masked_weights_get_no_gradient(tol):
    m = _model()
    prune_(m, Unstructured(sparsity=0.5))
    F.cross_entropy(m(torch.randn(4, 1, 28, 28)), torch.tensor([1, 2, 3, 4])).backward()
    for t in masked_targets(m):
        assert float(t.original().grad[~t.mask()].abs().max()) <= tol


def bake_leaves_plain_tensors_same_outputs(tol):
    m = _model()
    prune_(m, Unstructured(sparsity=0.8, scope=Global()))
    x = torch.randn(3, 1, 28, 28)
    before, nnz = m(x).detach(), count_nonzero(m)
    bake_(m)
    assert not list(masked_targets(m))
    assert all(type(p) is nn.Parameter for p in m.parameters())
    assert not any("parametrizations" in k for k in m.state_dict())
    assert torch.allclose(m(x), before, atol=tol)
    assert count_nonzero(m) == nnz


def count_nonzero_sees_masks(tol):
    m = create_model("lenet_300_100")
    dense = count_nonzero(m)
    prune_(m, Unstructured(sparsity=0.9, include=("net.1",)))
    removed = dense - count_nonzero(m)
    assert abs(removed - round(0.9 * 784 * 300)) <= tol


INVARIANTS = [
    ("mask of ones: outputs and grads unchanged", ones_mask_changes_nothing, 1e-6),
    ("parameter ids stable; masked stay exactly 0 under SGD+momentum+wd", param_identity_stable_and_optimizer_works, 0.0),
    ("masked weights get zero gradient", masked_weights_get_no_gradient, 0.0),
    ("bake_: plain Parameters, same outputs, same nnz", bake_leaves_plain_tensors_same_outputs, 1e-6),
    ("measure.count_nonzero counts masked weights", count_nonzero_sees_masks, 0),
]


@pytest.mark.parametrize("name,check,tol", INVARIANTS, ids=[r[0] for r in INVARIANTS])
def test_invariant(name, check, tol):
    check(tol)


def test_masks_only_shrink_when_pruned_again():
    m = create_model("lenet_300_100")
    prune_(m, Unstructured(sparsity=0.5))
    first = {t.fqn: t.mask().clone() for t in masked_targets(m)}
    with torch.no_grad():  # make pruned originals large: they must not come back
        for t in masked_targets(m):
            t.original()[~t.mask()] = 100.0
    prune_(m, Unstructured(sparsity=0.8))
    for t in masked_targets(m):
        assert not (t.mask() & ~first[t.fqn]).any()
    assert sparsity(m) == pytest.approx(0.8, abs=1e-4)


def test_select_globs_and_layer_listing():
    m = create_model("lenet_300_100")
    assert [t.name for t in select(m, include=["net.*"], exclude=["net.5"])] == ["net.1", "net.3"]
    assert is_masked(m) is False and get_mask(m.net[1]) is None


def test_deepcopy_then_bake_leaves_the_original_working():
    m = create_model("lenet_300_100")
    prune_(m, Unstructured(sparsity=0.5))
    c = bake_(copy.deepcopy(m))
    x = torch.randn(2, 1, 28, 28)
    assert torch.allclose(m(x), c(x), atol=1e-6)
    bake_(m)
    assert torch.allclose(m(x), c(x), atol=1e-6)
