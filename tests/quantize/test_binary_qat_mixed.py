import math

import pytest
import torch
from torch import nn

from netcompress.core.errors import ConfigError
from netcompress.quantize import (QAT, TTQ, TWN, Binary, Float16, FreezeBN, MixedPrecision, PerChannel, PerTensor,
                                  Pow2, QuantSpec, Ternary, clip_shadow_weights_, convert_qat_, quantize_)


def _mlp():
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


@pytest.mark.parametrize("scale", [PerTensor(), PerChannel(0)])
def test_binary_values_and_xnor_scaling(scale):
    m = _mlp()
    w0 = m[0].weight.detach().clone()
    quantize_(m, Binary(scale=scale))
    w = m[0].weight.detach()
    alpha = w0.abs().mean() if isinstance(scale, PerTensor) else w0.abs().mean(dim=1, keepdim=True)
    assert torch.allclose(w, torch.sign(w0) * alpha)


def test_binaryconnect_shadow_weights_learn_and_clip():
    m = _mlp()
    quantize_(m, Binary())  # Glorot H, as BinaryConnect
    H = math.sqrt(1.5 / (16 + 32))
    assert torch.allclose(m[0].weight.abs(), torch.full_like(m[0].weight, H))
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    shadow = m[0].parametrizations.weight.original
    before = shadow.detach().clone()
    m(torch.randn(8, 16)).pow(2).sum().backward()
    assert shadow.grad is not None and shadow.grad.abs().sum() > 0  # gradient computed on binary weights
    opt.step()
    assert not torch.equal(before, shadow.detach())
    clip_shadow_weights_(m)
    assert shadow.abs().max() <= H + 1e-7


def test_stochastic_binary_is_random_in_training_and_deterministic_in_eval():
    m = _mlp()
    quantize_(m, Binary(stochastic=True))
    m.train()
    a, b = m[0].weight.detach().clone(), m[0].weight.detach().clone()
    assert not torch.equal(a, b)
    m.eval()
    assert torch.equal(m[0].weight, m[0].weight)


def test_binary_keeps_pruned_zeros():
    m = _mlp()
    with torch.no_grad():
        m[0].weight[:, :5] = 0
    quantize_(m, Binary(stochastic=True))
    assert (m[0].weight[:, :5] == 0).all()


def test_twn_threshold_and_scale():
    m = _mlp()
    w0 = m[0].weight.detach().clone()
    quantize_(m, Ternary(TWN(0.7)))
    delta = 0.7 * w0.abs().mean()
    keep = w0.abs() > delta
    alpha = w0.abs()[keep].mean()
    assert torch.allclose(m[0].weight, alpha * torch.sign(w0) * keep)


def test_ttq_learns_scales():
    m = _mlp()
    quantize_(m, Ternary(TTQ(0.05)))
    p = m[0].parametrizations.weight[0]
    assert torch.unique(m[0].weight).numel() <= 3
    m(torch.randn(8, 16)).pow(2).sum().backward()
    assert p.wp.grad is not None and p.wn.grad is not None
    assert m[0].parametrizations.weight.original.grad is not None


def test_inq_incremental_pow2():
    m = _mlp()
    quantize_(m, Pow2(bits=5, fraction=0.5))
    w = m[0].weight.detach()
    p = m[0].parametrizations.weight[0]
    assert abs(p.frozen.float().mean().item() - 0.5) < 0.01
    fv = w[p.frozen]
    nz = fv[fv != 0].abs()
    assert torch.equal(torch.log2(nz), torch.round(torch.log2(nz)))  # powers of two
    m(torch.randn(4, 16)).sum().backward()
    g = m[0].parametrizations.weight.original.grad
    assert (g[p.frozen] == 0).all() and g[~p.frozen].abs().sum() > 0  # only the free half retrains
    quantize_(m, Pow2(bits=5, fraction=1.0))
    assert p.frozen.all()
    mags = torch.unique(m[0].weight.abs())
    assert mags.numel() <= 2 ** 3 + 1


def test_qat_trains_and_converts_to_grid():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    data = [torch.randn(8, 1, 8, 8) for _ in range(3)]
    quantize_(m, QAT(weight=QuantSpec(4, True, PerChannel(0)), learn_scale=True), data=data)
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    m.train()
    for x in data:
        opt.zero_grad()
        m(x).pow(2).mean().backward()
        opt.step()
    assert m[0].parametrizations.weight[0].scale.grad is not None  # LSQ
    m.eval()
    x = torch.randn(2, 1, 8, 8)
    y = m(x)
    from netcompress.quantize import set_quant_enabled

    set_quant_enabled(m, False, weights=False)  # compare weights-only so conversion is exact
    y = m(x)
    convert_qat_(m)
    assert isinstance(m[1], nn.Identity)
    assert torch.allclose(m(x), y, atol=1e-4)
    for row in m[0].weight.detach().flatten(1):  # <= 15 levels per channel after the BN fold
        assert torch.unique(row).numel() <= 15


def test_freeze_bn_callback():
    m = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    cb = FreezeBN(epoch=1)
    trainer = type("T", (), {"model": m})()
    m.train()
    cb.on_epoch_start(trainer, 0)
    cb.on_batch_start(trainer, None, None)
    assert m[1].training
    cb.on_epoch_start(trainer, 1)
    cb.on_batch_start(trainer, None, None)
    assert not m[1].training


def test_float16():
    m = _mlp()
    quantize_(m, Float16())
    assert m[0].weight.dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="dtype"):
        Float16(dtype=torch.int8)


def test_mixed_precision_meets_budget_and_protects_sensitive_layer():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    with torch.no_grad():  # heavy-tailed weights in layer '2' make it the sensitive one
        m[2].weight.copy_(torch.distributions.StudentT(1.5).sample(m[2].weight.shape) * 0.05)
    bits = quantize_(m, MixedPrecision(budget_bits=4.0, candidates=(2, 4, 8)), data=[torch.randn(64, 16)]).details["bits"]
    sizes = {"0": 16 * 64, "2": 64 * 64, "4": 64 * 4}
    assert sum(bits[n] * sizes[n] for n in sizes) <= 4.0 * sum(sizes.values())
    assert set(bits) == set(sizes)
    for n, b in bits.items():
        w = dict(m.named_modules())[n].weight
        assert max(torch.unique(r).numel() for r in w) <= 2 ** b - 1


def test_bad_configs():
    with pytest.raises(ConfigError, match="Pow2.bits"):
        Pow2(bits=1)
    with pytest.raises(ConfigError, match="Binary.scale"):
        Binary(scale="xnor")
    with pytest.raises(ConfigError, match="budget"):
        MixedPrecision(budget_bits=1.0, candidates=(2, 4))
