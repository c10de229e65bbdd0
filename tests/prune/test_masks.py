"""Masks: they only shrink, select by globs, survive deepcopy (the invariants are in tests/invariants)."""
import copy

import pytest
import torch

from netcompress.models import create_model
from netcompress.prune import Unstructured, bake_, get_mask, is_masked, masked_targets, prune_, select, sparsity


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
