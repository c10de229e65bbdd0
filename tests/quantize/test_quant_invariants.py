"""Quantization invariants in one table; each row: name, a function returning the measured error, tolerance."""
import copy

import pytest
import torch
from torch import nn

from netcompress.export import effective_state_dict, load_compressed, save_compressed
from netcompress.quantize import (PTQ, TTQ, TWN, Binary, Clustered, PerChannel, Pow2, QuantSpec, Ternary, dequantize,
                                  dequantize_, fold_bn_, qparams, quantize, quantize_, set_quant_enabled)


def _net():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, 5))
    with torch.no_grad():
        m[1].running_mean.normal_()
        m[1].running_var.uniform_(0.5, 2.0)
        m[0].weight[:, :, 0, :] = 0.0  # "pruned" weights
        m[4].weight[:, ::3] = 0.0
    return m.eval()


X = torch.randn(4, 1, 8, 8)


def half_step_error():
    x = torch.randn(1000) * 3
    spec = QuantSpec(5, False)
    s, z = qparams(x.min(), x.max(), spec)
    return float(((dequantize(quantize(x, s, z, spec), s, z) - x).abs() / s).max())  # in steps


def zero_stays_zero(config):
    def run():
        m = _net()
        zeros = [(mod, mod.weight == 0) for mod in (m[0], m[4])]
        quantize_(m, config, data=[X])
        return max(float(mod.weight.detach()[z].abs().max()) for mod, z in zeros)
    return run


def compressed_round_trip():
    m = _net()
    quantize_(m, Clustered(bits=3))
    import tempfile, os
    p = os.path.join(tempfile.mkdtemp(), "m.ncz")
    save_compressed(m, p)
    back, ref = load_compressed(p), effective_state_dict(m)
    return max(float((back[k].double() - ref[k].double()).abs().max()) if back[k].numel() else 0.0 for k in ref)


def quant_off_is_identity():
    m = _net()
    y = m(X)
    quantize_(m, PTQ(fold_bn=False), data=[X])
    set_quant_enabled(m, False)
    return float((m(X) - y).detach().abs().max())


def bn_fold_equal():
    m = _net()
    y = m(X)
    fold_bn_(m)
    return float((m(X) - y).detach().abs().max())


def bake_is_identity():
    m = _net()
    quantize_(m, PTQ(weight=QuantSpec(4, True, PerChannel(0)), activation=None))
    y = m(X)
    dequantize_(m)
    return float((m(X) - y).detach().abs().max())


INVARIANTS = [
    ("quantize->dequantize error within half a step (in steps)", half_step_error, 0.5 + 1e-5),
    ("zero stays zero: PTQ int8", zero_stays_zero(PTQ()), 0.0),
    ("zero stays zero: clustering", zero_stays_zero(Clustered(bits=2)), 0.0),
    ("zero stays zero: binary", zero_stays_zero(Binary(scale=PerChannel(0))), 0.0),
    ("zero stays zero: TWN", zero_stays_zero(Ternary(TWN())), 0.0),
    ("zero stays zero: TTQ", zero_stays_zero(Ternary(TTQ())), 0.0),
    ("zero stays zero: pow2", zero_stays_zero(Pow2(bits=4)), 0.0),
    ("load_compressed(save_compressed(m)) == m bit for bit", compressed_round_trip, 0.0),
    ("fake-quant disabled == fp32 model", quant_off_is_identity, 0.0),
    ("BN folded == BN model", bn_fold_equal, 1e-5),
    ("baking fake-quant weights changes nothing", bake_is_identity, 0.0),
]


@pytest.mark.parametrize("name,fn,tol", INVARIANTS, ids=[r[0] for r in INVARIANTS])
def test_invariant(name, fn, tol):
    assert fn() <= tol
