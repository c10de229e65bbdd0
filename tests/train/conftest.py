import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset


def _make_data(n=128, dim=8, classes=3, seed=0):
    """A seeded, learnable classification set: labels from a random linear map."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    w = torch.randn(dim, classes, generator=g)
    return TensorDataset(x, (x @ w).argmax(dim=1))


def _make_model(seed=0, dim=8, classes=3, hidden=16, dropout=0.0):
    torch.manual_seed(seed)
    layers = [nn.Linear(dim, hidden), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden, classes))
    return nn.Sequential(*layers)


@pytest.fixture
def make_data():
    return _make_data


@pytest.fixture
def make_model():
    return _make_model


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def strip_time(history):
    return [{k: v for k, v in m.items() if k != "seconds"} for m in history]


@pytest.fixture
def helpers():
    class H:
        pass

    H.weights = staticmethod(weights)
    H.strip_time = staticmethod(strip_time)
    return H
