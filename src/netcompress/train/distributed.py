"""Data-parallel helpers: process-group setup, rank queries, and the epoch-seeded sampler.

Only the gloo backend is used: the toolkit targets CPU, and gloo needs no extra setup."""
from __future__ import annotations

import logging
import math
import os
from datetime import timedelta
from typing import Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from ..core.errors import ConfigError

logger = logging.getLogger(__name__)

_ENV_VARS = ("MASTER_ADDR", "MASTER_PORT")

# The rendezvous store is made once and kept for the life of the process; every group gets its own
# key prefix. Re-creating the default group on a fresh env:// store reuses the destroyed group's key
# names, and gloo then connects to stale addresses (refused or hung), which broke a second
# Trainer.fit() under torchrun (train, prune, fine-tune in one script).
_store: Optional[dist.Store] = None
_generation = 0


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes: from the process group, else from torchrun's WORLD_SIZE, else 1."""
    if _initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank: from the process group, else from torchrun's RANK, else 0."""
    if _initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_distributed() -> bool:
    """True once a process group with more than one process is running."""
    return _initialized() and dist.get_world_size() > 1


def launched_distributed() -> bool:
    """True under a multi-process launcher (torchrun) or an initialised multi-process group."""
    return is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(backend: str = "gloo", rank: Optional[int] = None,
                     world_size: Optional[int] = None, timeout_s: float = 1800.0) -> bool:
    """Initialise the default process group from torchrun's environment (or explicit rank and
    world size). Returns True if this call created the group, False if one already existed or
    the process was not launched by torchrun (then training stays single-process).

    Whoever creates the group owns it: a Trainer only destroys a group it created itself."""
    if not dist.is_available():
        raise ConfigError("torch.distributed is not available in this torch build; run single-process")
    if _initialized():
        return False
    if rank is None and world_size is None and "WORLD_SIZE" not in os.environ:
        logger.info("init_distributed(): not launched by torchrun; training single-process")
        return False
    if (rank is None) != (world_size is None):
        raise ConfigError("init_distributed(): pass both rank and world_size, or neither")
    needed = _ENV_VARS if rank is not None else _ENV_VARS + ("RANK", "WORLD_SIZE")
    missing = [v for v in needed if v not in os.environ]
    if missing:
        raise ConfigError(f"init_distributed() needs environment variables {missing}; launch with "
                          "`torchrun --nproc_per_node=N script.py` or set them yourself")
    if rank is None:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    global _store, _generation
    timeout = timedelta(seconds=timeout_s)
    if _store is None:
        _store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world_size, timeout=timeout))
        _store.set_timeout(timeout)
    _generation += 1  # every rank creates groups in the same order, so generations agree
    store = dist.PrefixStore(f"netcompress/pg{_generation}", _store)
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size,
                            timeout=timeout)
    logger.info("initialised %s process group: rank %d of %d", backend, dist.get_rank(),
                dist.get_world_size())
    return True


def destroy_distributed() -> None:
    if _initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum a few numbers over all ranks (float64, so counts stay exact). Identity if single-process."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for (seed, epoch): (0, 1) and (1, 0) give unrelated orders,
    unlike DistributedSampler's ``seed + epoch``."""
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)
    return int(state[0]) >> 1


def epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator()
    g.manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(n, generator=g).tolist()


class EpochSampler(DistributedSampler):
    """Training order of epoch ``e`` = a permutation drawn from a generator seeded with (seed, e);
    rank ``r`` of ``W`` takes positions ``r, r+W, ...`` of it.

    The same class serves the single-process run (``num_replicas=1``), so with a per-rank batch of
    ``B // W`` global batch ``k`` holds exactly the samples of batch ``k`` of the one-process run.
    The order depends only on (seed, epoch), never on RNG history, so a resumed run sees exactly the
    batches the uninterrupted run saw."""

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                         drop_last=False)

    def __iter__(self) -> Iterator[int]:
        indices = epoch_permutation(len(self.dataset), self.seed, self.epoch)
        # pad like DistributedSampler (drop_last=False) so every rank runs the same number of steps
        pad = self.total_size - len(indices)
        if pad > 0:
            indices += (indices * math.ceil(pad / max(len(indices), 1)))[:pad]
        return iter(indices[self.rank:self.total_size:self.num_replicas])
