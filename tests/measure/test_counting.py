import pytest
import torch
from torch import nn

from netcompress.core.errors import ModelError
from netcompress.measure import analyze, bytes_fp32, count_nonzero, count_params
from netcompress.models import create_model


def test_lenet5_caffe_hand_count():
    a = analyze(create_model("lenet5"), torch.zeros(1, 1, 28, 28))
    assert a.totals["params"] == 431_080
    assert a.totals["macs"] == 2_293_000
    per_layer = {s.name: s.macs for s in a.layers}
    assert per_layer["features.0"] == 24 * 24 * 20 * 25
    assert per_layer["features.2"] == 8 * 8 * 50 * 20 * 25
    assert per_layer["classifier.1"] == 800 * 500


def test_lenet_300_100_hand_count():
    a = analyze(create_model("lenet_300_100"), torch.zeros(1, 1, 28, 28))
    assert (a.totals["params"], a.totals["macs"]) == (266_610, 266_200)
    assert a.totals["bytes_fp32"] == 4 * 266_610


def _resnet20_hand_count(c_in=1, side=28, classes=10):
    params = macs = 0

    def conv(ci, co, k, out_side):
        nonlocal params, macs
        params += ci * co * k * k + 2 * co  # weights + BN gamma/beta
        macs += ci * co * k * k * out_side * out_side

    conv(c_in, 16, 3, side)
    sides = [side, (side + 1) // 2, ((side + 1) // 2 + 1) // 2]
    planes = 16
    for stage, w in enumerate((16, 32, 64)):
        for block in range(3):
            s = sides[stage]
            conv(planes, w, 3, s)
            conv(w, w, 3, s)
            if planes != w:
                conv(planes, w, 1, s)
            planes = w
    params += 64 * classes + classes
    macs += 64 * classes
    return params, macs


@pytest.mark.parametrize("shape", [(1, 1, 28, 28), (1, 3, 32, 32)])
def test_resnet20_hand_count(shape):
    m = create_model("resnet20", in_channels=shape[1], input_size=shape[2])
    a = analyze(m, torch.zeros(shape))
    assert (a.totals["params"], a.totals["macs"]) == _resnet20_hand_count(shape[1], shape[2])


def test_grouped_strided_dilated_conv_and_attention_matmuls():
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=2, dilation=2, groups=4, bias=True)
    a = analyze(nn.Sequential(conv), torch.zeros(1, 8, 15, 15))
    out = conv(torch.zeros(1, 8, 15, 15))
    assert a.totals["macs"] == out.numel() * (8 // 4) * 9
    assert a.layers[0].other_ops == out.numel()  # bias adds listed apart

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(32, 96)

        def forward(self, x):  # (B, T, 32)
            q, k, v = self.qkv(x).chunk(3, -1)
            return (q @ k.transpose(1, 2)).softmax(-1) @ v

    a = analyze(Attn(), torch.zeros(2, 10, 32))
    assert a.totals["macs"] == 2 * 10 * 32 * 96 + 2 * (10 * 10 * 32) * 2


def test_nonzero_counts_and_bytes():
    m = nn.Linear(10, 10)
    with torch.no_grad():
        m.weight[:5] = 0
    assert count_params(m) == 110
    assert count_nonzero(m) == 110 - 50 - int((m.bias == 0).sum())
    assert bytes_fp32(nn.BatchNorm1d(4)) == 4 * (8 + 8)  # running mean/var are floats, the counter is not


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(ModelError, match=r"input of shape \(1, 3, 28, 28\) does not fit"):
        analyze(create_model("lenet5"), torch.zeros(1, 3, 28, 28))


def test_analyze_restores_training_mode_and_json():
    m = create_model("lenet5").train()
    a = analyze(m, torch.zeros(1, 1, 28, 28))
    assert m.training
    d = a.to_dict()
    assert set(d["totals"]) >= {"params", "nonzero_params", "macs", "bytes_fp32"}
