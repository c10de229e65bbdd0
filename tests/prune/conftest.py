import pytest
import torch
import torch.nn.functional as F

from netcompress.data import digits
from netcompress.models import create_model


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # 2 intra-op threads on a shared 2-core box make these tiny models 10-30x slower
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits8():
    return digits(image_size=8)


def train_quick(model, x, y, epochs=40, lr=0.1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model


@pytest.fixture(scope="session")
def trained_mlp(digits8):
    """A small MLP trained on 8x8 digits (about 2 s), shared by the criterion tests (deepcopy it)."""
    torch.manual_seed(0)
    m = create_model("mlp", in_channels=1, input_size=8, hidden=(64, 32))
    x, y = digits8.train.tensors
    return train_quick(m, x, y)
