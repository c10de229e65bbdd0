import math

import pytest
import torch
import yaml
from torch import nn

from netcompress.core.errors import OutputExistsError
from netcompress.models import create_model
from netcompress.quantize import (MSE, PTQ, PerChannel, QuantSpec, calibration_stats, dequantize_, quantize_,
                                  sqnr_report, write_stats_file)


def _calib(n=4, shape=(16, 1, 28, 28)):
    return [torch.randn(*shape) for _ in range(n)]


def test_ptq_int8_close_to_fp32_and_stats_file(tmp_path):
    m = create_model("lenet5").eval()
    x = torch.randn(8, 1, 28, 28)
    y = m(x)
    quantize_(m, PTQ(), data=_calib())
    assert (m(x) - y).abs().max() < 0.05 * y.abs().max()
    path = write_stats_file(m, tmp_path / "stats.yaml")
    stats = yaml.safe_load(path.read_text())
    assert set(stats) == {"features.0", "features.2", "classifier.1", "classifier.3"}
    s = stats["features.0"]
    for key in ("min", "max", "avg_min", "avg_max", "mean", "std", "shape"):
        assert key in s["inputs"][0]
    assert s["inputs"][0]["shape"] == [16, 1, 28, 28]
    assert len(s["weight_scale"]) == 20 and 0 <= s["input_zero_point"] <= 255
    with pytest.raises(OutputExistsError):
        write_stats_file(m, path)


def test_sqnr_report_finds_the_layer_that_hurts():
    m = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    with torch.no_grad():
        # an outlier column in layer '2' that reads a dead unit: harmless in fp32, but it stretches
        # the per-tensor 4-bit grid so every other weight of '2' rounds to zero
        m[0].weight[0] = 0.0
        m[0].bias[0] = -1.0
        m[2].weight[:, 0] = 50.0
    quantize_(m, PTQ(weight=QuantSpec(4, True), activation=None), data=[torch.randn(64, 16)])
    rows = sqnr_report(m, torch.randn(64, 16))
    per_layer = {r["layer"]: r["output_sqnr_db"] for r in rows}
    assert min(("0", "2", "4"), key=per_layer.get) == "2"
    assert math.isfinite(per_layer["(all)"])


def test_dequantize_bakes_quantized_weights():
    m = nn.Sequential(nn.Linear(8, 8))
    quantize_(m, PTQ(weight=QuantSpec(3, True, PerChannel(0)), activation=None), data=[torch.randn(4, 8)])
    w = m[0].weight.detach().clone()
    dequantize_(m)
    assert not hasattr(m[0], "parametrizations") and not hasattr(m[0], "input_quant")
    assert torch.equal(m[0].weight, w)
    assert all(torch.unique(row).numel() <= 7 for row in m[0].weight)


def test_ptq_on_pruned_model_keeps_zeros():
    from netcompress.prune import Unstructured, prune_

    m = create_model("lenet_300_100")
    prune_(m, Unstructured(sparsity=0.8))
    zeros = {n: (mod.weight == 0) for n, mod in m.named_modules() if isinstance(mod, nn.Linear)}
    quantize_(m, PTQ(act_observer=MSE(grid=10)), data=_calib(2))
    for n, mod in m.named_modules():
        if n in zeros:
            assert (mod.weight[zeros[n]] == 0).all()
    assert set(calibration_stats(m)) == set(zeros)


def test_double_quantize_is_refused_without_change():
    from netcompress.core.errors import ModelError

    m = nn.Sequential(nn.Linear(8, 8))
    quantize_(m, PTQ(activation=None))
    with pytest.raises(ModelError, match="already quantized"):
        quantize_(m, PTQ(activation=None))
