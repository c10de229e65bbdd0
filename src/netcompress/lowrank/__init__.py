"""Low-rank factorization: truncated SVD (plain or data-aware) of Linear/Conv2d layers and Tucker-2 of
conv kernels, each replacing a layer by a product of thinner standard layers.

>>> import torch
>>> from netcompress.models import lenet_300_100
>>> model = lenet_300_100()
>>> [f.ranks for f in decompose_(model, SVD(keep=0.5, include=("net.1",))).details["factored"]]
[(108,)]
>>> model(torch.zeros(2, 1, 28, 28)).shape
torch.Size([2, 10])
"""
from .config import SVD, DecomposeConfig, Tucker2
from .factor import DECOMPOSE, Factored, candidates, decompose_, swap

__all__ = ["DECOMPOSE", "DecomposeConfig", "Factored", "SVD", "Tucker2", "candidates", "decompose_", "swap"]
