import numpy as np
import pytest
import torch
from torch import nn

from netcompress.quantize import Clustered, bake_clusters_, centroid_parameters, kmeans_1d, quantize_, shared_weights
from netcompress.quantize import huffman


def test_kmeans_linear_init_uses_every_centroid_on_pruned_weights():
    w = torch.randn(20000)
    w = w[w.abs() > 1.5]  # two bands, as after magnitude pruning
    c, a = kmeans_1d(w, 16)
    assert c.numel() == 16 and torch.bincount(a).min() > 0
    err = (c[a] - w).abs().max()
    assert err < (w.max() - w.min()) / 16


def test_clustering_keeps_zeros_and_uses_k_values():
    m = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        m[0].weight[:, ::2] = 0.0
    zeros = m[0].weight == 0
    quantize_(m, Clustered(bits=3, bits_by_layer=(("2", 2),)))
    assert (m[0].weight[zeros] == 0).all()
    assert torch.unique(m[0].weight[~zeros]).numel() <= 8
    assert torch.unique(m[2].weight).numel() <= 4


def test_centroid_gradient_is_sum_over_its_weights():
    m = nn.Sequential(nn.Linear(6, 3, bias=False))
    quantize_(m, Clustered(bits=2))
    sw = shared_weights(m)["0"]
    x = torch.randn(5, 6)
    m(x).sum().backward()
    w_grad = x.sum(0).expand(3, 6)  # d(sum(xW^T))/dW
    expect = torch.zeros_like(sw.centroids).index_add_(0, sw.index.flatten(), w_grad.flatten())
    assert torch.allclose(sw.centroids.grad, expect, atol=1e-5)
    assert m[0].parametrizations.weight.original.grad is None


def test_centroid_fine_tuning_moves_shared_values_only():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 4))
    with torch.no_grad():
        m[0].weight[0] = 0
    quantize_(m, Clustered(bits=2))
    opt = torch.optim.SGD(centroid_parameters(m), lr=0.1)
    before = m[0].weight.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        m(torch.randn(16, 8)).pow(2).mean().backward()
        opt.step()
    after = m[0].weight.detach()
    assert not torch.equal(before, after) and (after[0] == 0).all()
    assert torch.unique(after).numel() <= 5  # still <= 4 shared values + zero
    bake_clusters_(m)
    assert torch.equal(m[0].weight, after) and not shared_weights(m)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_huffman_round_trip_and_near_entropy(seed):
    rng = np.random.default_rng(seed)
    s = rng.geometric(0.3, size=5000) - 1
    s = np.minimum(s, 31)
    lengths = huffman.code_lengths(np.bincount(s, minlength=32))
    data, nbits = huffman.encode(s, lengths)
    assert np.array_equal(huffman.decode(data, nbits, lengths, s.size), s)
    h = huffman.entropy_bits(s)
    assert h <= nbits <= h + s.size  # within 1 bit per symbol of the entropy bound


def test_huffman_single_symbol():
    s = np.zeros(10, dtype=np.int64)
    lengths = huffman.code_lengths(np.bincount(s))
    data, nbits = huffman.encode(s, lengths)
    assert nbits == 10 and np.array_equal(huffman.decode(data, nbits, lengths, 10), s)
