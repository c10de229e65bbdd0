"""An op the graph cannot follow is an error that names it, never a silently wrong shape."""
import pytest
import torch
from archs import Unsupported
from torch import nn

from netcompress.core.errors import ModelError
from netcompress.graph import ChannelGraph


def test_unknown_op_is_named():
    with pytest.raises(ModelError, match=r"chunk"):
        ChannelGraph(Unsupported(), torch.randn(2, 1, 8, 8))


def test_unknown_leaf_module_is_named():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.PixelShuffle(2), nn.Conv2d(1, 2, 3))
    with pytest.raises(ModelError, match=r"module '1'.*PixelShuffle"):
        ChannelGraph(model, torch.randn(2, 1, 8, 8))


def test_untraceable_forward_names_the_module():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 4, 3)

        def forward(self, x):
            y = self.a(x)
            return y if y.sum() > 0 else -y

    with pytest.raises(ModelError, match=r"could not trace Sequential.*in DataDependent.forward"):
        ChannelGraph(nn.Sequential(DataDependent()), torch.randn(2, 1, 8, 8))


def test_reshape_across_channels_is_refused():
    class Mix(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(8, 2, 3, padding=1)

        def forward(self, x):
            y = self.a(x)                                  # (B, 4, H, W)
            return self.b(y.reshape(y.shape[0], 8, 4, 8))  # channels mixed with rows

    with pytest.raises(ModelError, match=r"reshape"):
        ChannelGraph(Mix(), torch.randn(2, 1, 8, 8))


def test_channel_mixing_ops_lock_instead_of_pruning():
    class Soft(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 3, 3)

        def forward(self, x):
            return self.b(torch.softmax(self.a(x), dim=1))

    assert ChannelGraph(Soft(), torch.randn(2, 1, 8, 8)).groups == []
