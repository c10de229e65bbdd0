"""BatchNorm statistics re-estimated on data, with no weight update.

Removing channels or weights shifts every later layer's activations, so the running statistics stored in
the BatchNorms no longer fit them; re-estimating them is the cheap first step after structured pruning,
before (or instead of) fine-tuning.

>>> import torch
>>> from torch import nn
>>> m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
>>> _ = recalibrate_bn(m, torch.randn(64, 3) * 5 + 2, n=64)
>>> bool(m[1].running_var.mean() > 1.5), m.training
(True, True)
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.data import forward, iter_inputs
from ..core.errors import ConfigError


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data, n: int = 2048, batch_size: int = 256) -> nn.Module:
    """Reset every BatchNorm's running statistics and re-estimate them as the plain average over the first
    ``n`` samples of ``data`` (only inputs reach the model). Weights are untouched; the model's train/eval
    mode is restored. Returns ``model``."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return model
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"recalibrate_bn: n must be a positive number of samples, got {n!r}")
    saved, was_training = [m.momentum for m in bns], model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    try:
        for x in iter_inputs(data, batch_size=batch_size, max_samples=n):
            forward(model, x)
    finally:
        for m, momentum in zip(bns, saved):
            m.momentum = momentum
        model.train(was_training)
    return model
