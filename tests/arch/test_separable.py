import pytest
import torch
from torch import nn

from netcompress.arch import DepthwiseSeparable, separable_factors
from netcompress.arch.separable import _separable_module
from netcompress.core.errors import ConfigError
from netcompress.lowrank import decompose_
from netcompress.measure import analyze

CONVS = [  # (conv, input shape)
    (lambda: nn.Conv2d(4, 6, 3, padding=1), (2, 4, 8, 8)),
    (lambda: nn.Conv2d(3, 12, (3, 2), stride=2, padding=(1, 0), dilation=(2, 1), bias=False), (2, 3, 11, 9)),
    (lambda: nn.Conv2d(5, 4, 3, padding=1, padding_mode="replicate"), (1, 5, 7, 7)),  # out < k*k
]


@pytest.mark.parametrize("make, shape", CONVS)
def test_full_multiplier_is_exact(make, shape):
    torch.manual_seed(0)
    conv, x = make(), torch.randn(shape)
    k = conv.kernel_size[0] * conv.kernel_size[1]
    torch.testing.assert_close(_separable_module(conv, k)(x), conv(x), atol=1e-5, rtol=1e-5)


def test_rank_one_factors_are_the_best_per_channel_approximation():
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    dw, pw = separable_factors(w, 1)
    approx = torch.einsum("oc,ckl->ockl", pw[:, :, 0, 0], dw[:, 0])  # (out, in, kh, kw)
    err = ((w - approx) ** 2).sum()
    s = torch.linalg.svdvals(w.permute(1, 0, 2, 3).reshape(4, 6, 9))  # (in, min(out, k))
    torch.testing.assert_close(err, (s[:, 1:] ** 2).sum())  # Eckart-Young, channel by channel


def test_vgg_convs_become_separable_and_cheaper():
    from netcompress.models import vgg_small

    model = vgg_small(in_channels=1, input_size=28)
    x = torch.zeros(1, 1, 28, 28)
    before = analyze(model, x).totals["macs"]
    records = decompose_(model, DepthwiseSeparable(exclude=("features.0",))).details["factored"]
    assert len(records) == 5  # six 3x3 convs, the 1-channel stem excluded
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 5 and all(m.groups == m.in_channels for m in depthwise)
    assert analyze(model, x).totals["macs"] < 0.3 * before
    assert model(x).shape == (1, 10)


def test_bad_multiplier_and_nothing_to_gain():
    with pytest.raises(ConfigError, match="multiplier must be an integer >= 1"):
        DepthwiseSeparable(multiplier=0)
    model = nn.Sequential(nn.Conv2d(4, 1, 3))  # one output channel: 4*(9+1) weights, not fewer than 36
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="no selected layer gets smaller"):
        decompose_(model, DepthwiseSeparable())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
