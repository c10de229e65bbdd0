import pytest
import torch
from torch import nn

from netcompress.core.errors import ModelError
from netcompress.distill import FeatureTaps, layer_names
from netcompress.models import create_model


def _net():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_taps_capture_the_named_outputs_and_release_the_hooks():
    net = _net()
    x = torch.randn(2, 1, 8, 8)
    with FeatureTaps(net, ["0", "2"]) as taps:
        net(x)
        assert torch.equal(taps["0"], net[0](x))
        assert taps["2"].shape == (2, 144)
    assert all(not m._forward_hooks for m in net.modules())
    assert torch.equal(net(x), net[3](net[2](net[1](net[0](x)))))  # the model itself is unchanged


def test_missing_name_lists_the_closest_candidates():
    model = create_model("resnet20", in_channels=1, input_size=8)
    with pytest.raises(ModelError, match=r"no layer named 'layer_2'.*Closest: \['layer2'"):
        FeatureTaps(model, ["layer_2"], "teacher")
    assert "layer2.0.conv1" in layer_names(model)


def test_a_shared_module_is_refused_as_ambiguous():
    model = create_model("resnet20", in_channels=1, input_size=8).eval()  # a block's relu runs twice
    with FeatureTaps(model, ["layer1.0.relu", "layer1"]) as taps:
        model(torch.randn(1, 1, 8, 8))
        assert taps["layer1"].shape == (1, 16, 8, 8)
        with pytest.raises(ModelError, match="'layer1.0.relu' ran 2 times"):
            taps["layer1.0.relu"]


def test_a_layer_that_did_not_run():
    net = _net()
    with FeatureTaps(net, ["3"]) as taps:
        with pytest.raises(ModelError, match="did not run"):
            taps["3"]
