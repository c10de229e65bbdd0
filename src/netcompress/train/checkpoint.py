"""Trainer checkpoints: what is saved, and the checks made before a run is resumed from one.

Everything stored must load under ``torch.load(weights_only=True)``, so RNG states are converted
to tensors / plain Python values (numpy arrays are not allowed by the safe unpickler)."""
from __future__ import annotations

import logging
import platform
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import CheckpointError
from ..core.io import atomic_torch_save, safe_torch_load

logger = logging.getLogger(__name__)

FORMAT = "netcompress.train/1"
CHECKPOINT_NAME = "last.pt"
REQUIRED_KEYS = ("format", "model", "optimizer", "scheduler", "epoch", "global_step", "history",
                 "callbacks", "rng", "config")
# fields that may differ between the original and the resumed run without changing the result
HARMLESS_FIELDS = {"progress", "num_workers", "eval_batch_size", "channels_last"}


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = torch.from_numpy(np_state["state"]["key"].astype(np.int64))
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np_state}


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = dict(state["numpy"])
    np_state["state"] = dict(np_state["state"])
    np_state["state"]["key"] = np_state["state"]["key"].numpy().astype(np.uint32)
    np.random.set_state(np_state)


def callback_name(callback: Any) -> str:
    return type(callback).__qualname__


def save_checkpoint(path: Path, *, model, optimizer, scheduler, epoch: int, global_step: int,
                    history: list, callbacks, config) -> Path:
    payload = {
        "format": FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": epoch,  # index of the last completed epoch; a resume starts at epoch + 1
        "global_step": global_step,
        "history": history,
        "callbacks": [{"name": callback_name(cb), "state": cb.state_dict()} for cb in callbacks],
        "rng": capture_rng(),
        "config": config.to_dict(),
        "versions": {"torch": str(torch.__version__), "python": platform.python_version(),
                     "numpy": np.__version__},
    }
    try:
        return atomic_torch_save(payload, path)
    except Exception as exc:  # e.g. a callback state holding an object torch cannot pickle
        raise CheckpointError(f"could not write checkpoint {path} ({type(exc).__name__}: {exc}); "
                              "callback state_dict() must hold only tensors and plain values") from exc


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load and sanity-check a trainer checkpoint; every failure names the file and the fix."""
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a netcompress trainer checkpoint; delete it, or pass "
                              "resume=False with overwrite=True to start a new run there")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}; it is damaged, start a new run")
    return ckpt


def check_resumable(path: Path, ckpt: dict, config) -> None:
    """Refuse to resume into a different run: a changed lr would silently produce a result that
    matches neither the old run nor a fresh one."""
    saved = dict(ckpt["config"])
    current = config.to_dict()
    allowed = set(HARMLESS_FIELDS)
    if current.get("scheduler") in (None, "step"):
        allowed.add("epochs")  # extending a run is well-defined when no schedule spans all epochs
    diff = {k: (saved.get(k), current.get(k)) for k in sorted(set(saved) | set(current))
            if k not in allowed and saved.get(k) != current.get(k)}
    if diff:
        parts = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(f"cannot resume from {path}: config differs ({parts}); use the original "
                              "config, or a new checkpoint_dir for a new run")


def match_callbacks(path: Path, ckpt: dict, callbacks) -> list[tuple[Any, dict]]:
    """Pair saved callback states with this run's callbacks by class name (k-th with k-th).

    A saved non-empty state with no callback to take it is an error (e.g. a pruning schedule
    that would silently restart); stateless callbacks may come and go with a warning."""
    pending: dict[str, list[dict]] = {}
    for entry in ckpt["callbacks"]:
        pending.setdefault(entry["name"], []).append(entry["state"])
    pairs, added = [], []
    for cb in callbacks:
        states = pending.get(callback_name(cb))
        if states:
            pairs.append((cb, states.pop(0)))
        else:
            added.append(callback_name(cb))
    lost = [name for name, states in pending.items() for state in states if state]
    if lost:
        raise CheckpointError(f"cannot resume from {path}: it holds state for callbacks {lost} that "
                              "this run lacks; pass the same callbacks the run was started with")
    dropped = [name for name, states in pending.items() for _ in states]
    if added or dropped:
        logger.warning("resuming from %s with different callbacks (new: %s, dropped stateless: %s)",
                       path, added, dropped)
    return pairs
