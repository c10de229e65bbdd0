"""Turning the ``data=`` argument of data-hungry criteria into a bounded stream of batches.

Accepted: a ``(x, y)`` tuple of tensors, a bare input tensor ``x`` (label-free criteria only), a
``Dataset`` yielding ``(x, y)``, or a ``DataLoader``."""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..core.errors import ConfigError, DataError


def check_data(data, who: str, need_labels: bool = True) -> None:
    """Fail early (before any weight is touched) when a criterion cannot use ``data``."""
    if data is None:
        raise ConfigError(f"{who} needs data: pass data=(x, y) tensors, a Dataset or a DataLoader "
                          "(e.g. data=splits.train)")
    if isinstance(data, torch.Tensor):
        if need_labels:
            raise ConfigError(f"{who} needs labels: pass data=(x, y), a Dataset or a DataLoader, not only x")
        return
    if isinstance(data, (tuple, list)):
        if len(data) != 2 or not all(isinstance(t, torch.Tensor) for t in data):
            raise ConfigError(f"{who}: data as a tuple must be (x, y) tensors")
        if len(data[0]) != len(data[1]):
            raise DataError(f"{who}: x has {len(data[0])} rows but y has {len(data[1])}")
        return
    if not isinstance(data, (Dataset, DataLoader)):
        raise ConfigError(f"{who}: data must be (x, y) tensors, a Dataset or a DataLoader, "
                          f"got {type(data).__name__}")


def batches(data, max_samples: int, batch_size: int = 64) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Up to ``max_samples`` samples as ``(x, y)`` batches (``y`` is None for a bare tensor)."""
    if isinstance(data, torch.Tensor):
        data = (data, None)
    if isinstance(data, (tuple, list)):
        x, y = data
        n = min(len(x), max_samples)
        for i in range(0, n, batch_size):
            yield x[i:min(n, i + batch_size)], (None if y is None else y[i:min(n, i + batch_size)])
        return
    if isinstance(data, TensorDataset):
        yield from batches(tuple(data.tensors[:2]), max_samples, batch_size)
        return
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size)
    seen = 0
    for batch in loader:
        x, y = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        take = min(len(x), max_samples - seen)
        if take <= 0:
            return
        yield x[:take], (None if y is None else y[:take])
        seen += take
