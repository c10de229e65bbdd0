"""One data helper for every verb and the trainer: whatever the user holds becomes ``(inputs, targets)`` batches,
and only the inputs ever reach the model.

Accepted ``data=``:

- a tensor ``x`` (float images, or integer token ids, which stay integers);
- a tuple ``(x, y)`` of two tensors with as many rows;
- a list of batches, each ``x``, ``(x, y)`` or a dict;
- a ``Dataset`` whose items are ``x``, ``(x, y)`` or dicts (Hugging Face style);
- a ``DataLoader`` (or any iterable of batches of those forms);
- a dict of tensors (``input_ids``, ``attention_mask``, ..., optional ``labels``).

Inputs are a tensor or a dict of tensors; :func:`forward` calls the model with either.

>>> import torch
>>> x, y = torch.randn(10, 3), torch.arange(10)
>>> [tuple(b[0].shape) for b in iter_batches((x, y), batch_size=4)]
[(4, 3), (4, 3), (2, 3)]
>>> [b["input_ids"].dtype for b in iter_inputs({"input_ids": torch.ones(2, 5, dtype=torch.long)})]
[torch.int64]
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from .errors import ConfigError, DataError

__all__ = ["check_data", "iter_batches", "iter_inputs", "forward", "first_inputs", "batch_size_of", "take"]
LABEL_KEYS = ("labels", "label", "targets")

Inputs = Any  # a tensor or a dict of tensors


def _split(batch) -> tuple[Inputs, torch.Tensor | None]:
    """One loaded batch -> (inputs, targets or None)."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, Mapping):
        targets = next((batch[k] for k in LABEL_KEYS if k in batch), None)
        return {k: v for k, v in batch.items() if k not in LABEL_KEYS}, targets
    if isinstance(batch, (tuple, list)) and batch:
        x = batch[0]
        y = batch[1] if len(batch) > 1 and isinstance(batch[1], torch.Tensor) else None
        if isinstance(x, (torch.Tensor, Mapping)):
            return x, y
    raise DataError(f"a batch must be a tensor, (inputs, targets) or a dict of tensors; got {type(batch).__name__}")


def batch_size_of(inputs: Inputs) -> int:
    if isinstance(inputs, Mapping):
        return len(next(iter(inputs.values())))
    return len(inputs)


def _slice(inputs: Inputs, start: int, stop: int) -> Inputs:
    if isinstance(inputs, Mapping):
        return {k: v[start:stop] for k, v in inputs.items()}
    return inputs[start:stop]


def _is_pair(data) -> bool:
    """``(x, y)``: a tuple of two tensors with as many rows (or a 2-list whose second item is a label vector)."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)):
        return False
    x, y = data
    if x.dim() == 0 or y.dim() == 0 or len(x) != len(y):
        return False
    return isinstance(data, tuple) or (y.dim() == 1 and x.dim() > 1)


def _loaded(data, batch_size: int, shuffle: bool, seed: int) -> Iterable:
    """An iterable of raw batches."""
    if isinstance(data, torch.Tensor) or isinstance(data, Mapping) or _is_pair(data):
        x, y = (data, None) if not _is_pair(data) else data
        if isinstance(x, Mapping):
            y = next((x[k] for k in LABEL_KEYS if k in x), None)
            x = {k: v for k, v in x.items() if k not in LABEL_KEYS}
        n = batch_size_of(x)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else None

        def chunks():
            for i in range(0, n, batch_size):
                idx = slice(i, i + batch_size) if order is None else order[i:i + batch_size]
                xs = {k: v[idx] for k, v in x.items()} if isinstance(x, Mapping) else x[idx]
                yield xs if y is None else (xs, y[idx])
        return chunks()
    if isinstance(data, Dataset):
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=gen)
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        raise DataError(f"data=(x, y): x has {len(data[0])} rows but y has {len(data[1])}; they must match")
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
        return data
    raise ConfigError(f"data must be a tensor, (x, y) tensors, a Dataset, a DataLoader, a list of batches or a dict "
                      f"of tensors; got {type(data).__name__}")


def iter_batches(data, *, batch_size: int = 128, max_samples: int | None = None, max_batches: int | None = None,
                 shuffle: bool = False, seed: int = 0) -> Iterator[tuple[Inputs, torch.Tensor | None]]:
    """``(inputs, targets or None)`` batches of ``data``, at most ``max_samples`` samples / ``max_batches`` batches.

    Empty batches are passed over; no batch at all is a DataError."""
    if data is None:
        raise DataError("this needs data=: a Dataset, DataLoader, (x, y) tensors or a list of input batches "
                        "(e.g. data=splits.calibration(256))")
    seen = batches = 0
    for raw in _loaded(data, batch_size, shuffle, seed):
        if max_batches is not None and batches >= max_batches:
            break
        x, y = _split(raw)
        n = batch_size_of(x)
        if max_samples is not None:
            n = min(n, max_samples - seen)
            if n <= 0:
                break
            x, y = _slice(x, 0, n), (None if y is None else y[:n])
        if n == 0:
            continue
        seen += n
        batches += 1
        yield x, y
    if batches == 0:
        raise DataError("the data is empty; pass at least one non-empty batch")


def iter_inputs(data, **kwargs) -> Iterator[Inputs]:
    """Only the model inputs of :func:`iter_batches` (targets are never fed to the model)."""
    for x, _ in iter_batches(data, **kwargs):
        yield x


def first_inputs(data, n: int = 2) -> Inputs:
    """The first ``n`` inputs of ``data`` (an example batch for tracing and export)."""
    return next(iter_inputs(data, batch_size=n, max_samples=n))


def take(data, n: int) -> tuple[Inputs, torch.Tensor | None]:
    """The first ``n`` samples of ``data`` concatenated into one batch: (inputs, targets or None)."""
    xs, ys = [], []
    for x, y in iter_batches(data, batch_size=min(n, 512), max_samples=n):
        xs.append(x)
        ys.append(y)
    if isinstance(xs[0], Mapping):
        inputs = {k: torch.cat([x[k] for x in xs]) for k in xs[0]}
    else:
        inputs = torch.cat(xs)
    targets = None if any(y is None for y in ys) else torch.cat(ys)
    return inputs, targets


def forward(model, inputs: Inputs):
    """``model(**inputs)`` for a dict (Hugging Face style), else ``model(inputs)``."""
    return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)


def check_data(data, who: str, need_labels: bool = True) -> None:
    """Fail before any weight is touched when ``who`` cannot use ``data``: missing, or unlabelled where labels
    are needed."""
    if data is None:
        raise ConfigError(f"{who} needs data: pass data=(x, y) tensors, a Dataset or a DataLoader "
                          "(e.g. data=splits.train)")
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor) and not _is_pair(data):
        raise DataError(f"{who}: data=(x, y) must hold two tensors with as many rows; got {len(data[0])} and "
                        f"{len(data[1]) if isinstance(data[1], torch.Tensor) else type(data[1]).__name__}")
    if need_labels:
        _, y = next(iter_batches(data, batch_size=2, max_samples=2))
        if y is None:
            raise ConfigError(f"{who} needs labels: pass data=(x, y), a Dataset of (x, y) or a DataLoader, "
                              "not only inputs")
