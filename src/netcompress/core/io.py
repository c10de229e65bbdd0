"""File helpers shared by every family: atomic writes, overwrite refusal, safe weight loading.

Loading never executes code: safetensors, or ``torch.load(weights_only=True)``."""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import CheckpointError, OutputExistsError


def ensure_writable(path: str | os.PathLike, force: bool = False) -> Path:
    """Refuse to overwrite an existing file unless ``force``; create parent folders."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists; choose a new path or pass --force (force=True) to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write through a temporary file in the same folder, then rename: a killed process never
    leaves a half-written file at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda p: torch.save(obj, p))


def safe_torch_load(path: str | os.PathLike):
    """``torch.load(weights_only=True)`` with errors that name the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, pickle.UnpicklingError) as exc:
        if "Unsupported global" in str(exc):  # a valid file holding a type the safe loader refuses
            raise CheckpointError(
                f"checkpoint {path} holds objects that cannot be loaded without executing code; save plain "
                "tensors, numbers and strings (state_dict()) or use safetensors") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({first}); re-create it or point to another file"
        ) from None
    except Exception as exc:  # weights_only unpickler refusing a type, etc.
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded safely ({type(exc).__name__}); save it with state_dict() "
            "or safetensors") from None


def save_weights(model_or_state: nn.Module | dict, path: str | os.PathLike, force: bool = False) -> Path:
    """Save weights as safetensors (``.safetensors``) or a torch state_dict (any other suffix)."""
    from safetensors.torch import save_file

    path = ensure_writable(path, force)
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    state = {k: v.detach().contiguous() for k, v in state.items()}
    if path.suffix == ".safetensors":
        return atomic_write(path, lambda p: save_file(state, str(p)))
    return atomic_torch_save(state, path)


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist; check the path")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"weights file {path} is truncated or corrupt ({exc}); re-create it") from None
    state = safe_torch_load(path)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a trainer checkpoint
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state_dict")
    return state


def load_weights_into(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a weights file into ``model``; a missing/unexpected key or shape mismatch names the keys."""
    state = load_weights(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}")
        if wrong:
            parts.append(f"shape mismatch {wrong[:5]}")
        raise CheckpointError(
            f"weights file {path} does not fit the model ({'; '.join(parts)}); pass the model and "
            "options the weights were trained with")
    model.load_state_dict(state)
    return model
