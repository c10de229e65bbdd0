import pytest
import torch

from netcompress.core.errors import ModelError
from netcompress.models import MODELS, create_model


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (2, 3, 32, 32)])
def test_every_zoo_model_runs_on_both_input_kinds(name, shape):
    m = create_model(name, in_channels=shape[1], input_size=shape[2], num_classes=7)
    assert m(torch.randn(shape)).shape == (2, 7)


def test_unknown_model_and_option():
    with pytest.raises(ModelError, match="Did you mean 'resnet20'"):
        create_model("resnet_20")
    with pytest.raises(ModelError, match="allowed"):
        create_model("lenet5", widht=3)
    with pytest.raises(ModelError, match="6n\\+2"):
        from netcompress.models import CifarResNet
        CifarResNet(depth=21)


def test_resnet_depths():
    for depth in (20, 32, 56):
        m = create_model(f"resnet{depth}")
        convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d) and x.kernel_size == (3, 3)]
        assert len(convs) + 1 == depth  # 3x3 convs plus the fc layer
