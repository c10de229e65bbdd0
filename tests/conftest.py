import os

import pytest
import torch

from netcompress.data import DEFAULT_FASHION_DIR

HAS_FASHION = (DEFAULT_FASHION_DIR / "train-images-idx3-ubyte.gz").is_file()
requires_fashion = pytest.mark.skipif(not HAS_FASHION, reason="dataset-fashion-mnist is not installed (make data)")

os.environ.setdefault("OMP_NUM_THREADS", "1")
# two xdist workers on two cores: one thread each (more threads thrash, e.g. LAPACK SVD 30x slower)
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def digits28():
    from netcompress.data import digits

    return digits(image_size=28)
