import pytest
import torch
from torch import nn

from netcompress.core.errors import ConfigError, DataError
from netcompress.quantize import (MSE, PTQ, Clustered, MinMax, MovingAverage, PerChannel, Percentile, PerTensor,
                                  QuantSpec, RangeTracker, dequantize, fake_quantize, fold_bn_, qparams, quantize,
                                  quantize_)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("gran", [PerTensor(), PerChannel(0), PerChannel(1)])
def test_round_trip_error_within_half_step(bits, symmetric, gran):
    x = torch.randn(6, 5, 3) * torch.linspace(0.1, 3, 6).reshape(6, 1, 1)
    spec = QuantSpec(bits, symmetric, gran)
    axis = spec.axis_for(x)
    t = RangeTracker(axis=axis)
    t.update(x)
    scale, zp = qparams(*MinMax().clip(t, spec), spec)
    if axis is None:
        scale, zp = scale.reshape(()), zp.reshape(())
    q = quantize(x, scale, zp, spec, axis)
    assert q.min() >= spec.qmin and q.max() <= spec.qmax
    err = (dequantize(q, scale, zp, axis) - x).abs()
    shape = [1] * x.dim()
    if axis is not None:
        shape[axis] = -1
    assert (err <= scale.reshape(shape) / 2 + 1e-6).all()


@pytest.mark.parametrize("symmetric", [True, False])
def test_zero_is_exact(symmetric):
    x = torch.tensor([0.0, 0.3, 1.7, 0.0, 2.2])  # all >= 0: asymmetric range still includes 0
    spec = QuantSpec(4, symmetric)
    scale, zp = qparams(x.min(), x.max(), spec)
    y = dequantize(quantize(x, scale, zp, spec), scale, zp)
    assert (y[x == 0] == 0).all()


def test_fake_quantize_straight_through_gradient():
    x = torch.linspace(-2, 2, 11, requires_grad=True)
    spec = QuantSpec(8, True)
    scale, zp = qparams(torch.tensor(-1.0), torch.tensor(1.0), spec)
    fake_quantize(x, scale, zp, spec.qmin, spec.qmax).sum().backward()
    inside = (x.detach().abs() <= 1.0)
    assert torch.equal(x.grad, inside.float())  # identity inside the range, 0 where clipped


def test_lsq_scale_gets_gradient():
    x = torch.randn(100)
    scale = nn.Parameter(torch.tensor(0.05))
    fake_quantize(x, scale, torch.tensor(0), -7, 7).pow(2).sum().backward()
    assert scale.grad is not None and scale.grad != 0


@pytest.mark.parametrize("bits", [0, 9, 32, -1, 1.5, "8"])
def test_bad_bits(bits):
    with pytest.raises(ConfigError, match="bits"):
        QuantSpec(bits=bits)


def test_bad_axis_is_clear_and_model_untouched():
    m = nn.Sequential(nn.Linear(4, 3))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ConfigError, match=r"PerChannel\(axis=5\)"):
        quantize_(m, PTQ(weight=QuantSpec(8, True, PerChannel(5)), activation=None))
    assert list(m.state_dict()) == list(before)


def test_calibration_without_data():
    m = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(DataError, match="calibration"):
        quantize_(m, PTQ())
    with pytest.raises(DataError, match="empty"):
        quantize_(m, PTQ(), data=[])
    assert not hasattr(m[0], "parametrizations")


def test_unknown_config():
    with pytest.raises(ConfigError, match="is not a config quantize_ takes"):
        quantize_(nn.Linear(2, 2), object())


@pytest.mark.parametrize("obs", [MinMax(), MovingAverage(0.5), Percentile(99.0), MSE(grid=20)])
def test_observers_ranges(obs):
    t = RangeTracker()
    for _ in range(3):
        t.update(torch.cat([torch.randn(5000), torch.tensor([40.0])]))  # one outlier per batch
    lo, hi = obs.clip(t, QuantSpec(4, False))
    assert float(lo) <= 0 <= float(hi) and float(hi) <= 40.0 + 1e-6
    if isinstance(obs, (Percentile, MSE)):
        assert float(hi) < 20.0  # the outlier is clipped away


def test_mse_beats_minmax_at_4_bits():
    t = RangeTracker()
    t.update(torch.cat([torch.randn(20000), torch.tensor([30.0, -30.0])]))
    spec = QuantSpec(4, True)
    errs = {}
    for name, obs in (("minmax", MinMax()), ("mse", MSE())):
        s, z = qparams(*obs.clip(t, spec), spec)
        errs[name] = (fake_quantize(t.samples, s, z, spec.qmin, spec.qmax) - t.samples).pow(2).mean()
    assert errs["mse"] < 0.5 * errs["minmax"]


def test_bn_fold_matches_and_removes_bn():
    from netcompress.models import create_model

    m = create_model("resnet20", in_channels=1, input_size=16).eval()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.normal_()
            mod.running_var.uniform_(0.5, 2)
            mod.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 1, 16, 16)
    y = m(x)
    pairs = fold_bn_(m)
    assert len(pairs) == 21  # stem + 18 block convs + 2 shortcut convs, each with its BN
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in m.modules())
    assert torch.allclose(m(x), y, atol=1e-4, rtol=1e-4)


def test_clustered_config_validation():
    with pytest.raises(ConfigError, match="bits"):
        Clustered(bits=9)
    with pytest.raises(ConfigError, match="init"):
        Clustered(init="kmeans++")
