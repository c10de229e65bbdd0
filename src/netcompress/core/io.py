"""File helpers shared by every family: atomic writes, overwrite refusal, safe weight loading.

Loading never executes code: safetensors, or ``torch.load(weights_only=True)``. A file that would need
code to load is named as such (with the Python names it imports), told apart from a corrupt one.
Writing never leaves a partial file or a ``*.tmp`` behind, and a full disk is named as one."""
from __future__ import annotations

import errno
import os
import pickle
import pickletools
import tempfile
import warnings
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from .errors import CheckpointError, DiskFullError, NetcompressError, OutputError, OutputExistsError
from .limits import available_memory, format_bytes

# below this much free space after a failed write, the failure is the full disk (torch.save reports
# ENOSPC as "unexpected pos 576 vs 534")
_FULL_DISK_BYTES = 1 << 20
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# a deflated zip member expanding more than this is a zip bomb; torch writes its members uncompressed
_MAX_ZIP_RATIO = 200


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot create folder {folder}: a file of that name is in the way; "
                          "choose another path") from None
    except OSError as exc:
        raise output_error(folder, exc) from None


def ensure_writable(path: str | os.PathLike, force: bool = False) -> Path:
    """Refuse to overwrite an existing file unless ``force``; refuse a directory always; create parent folders."""
    path = Path(path)
    if path.is_dir():
        raise OutputExistsError(f"{path} is a directory; give a file path to write")
    if (path.exists() or path.is_symlink()) and not force:
        raise OutputExistsError(f"{path} exists; choose a new path or pass --force (force=True) to overwrite it")
    _mkdir(path.parent)
    return path


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_disk_full(exc: BaseException, folder: Optional[Path] = None) -> bool:
    """Whether ``exc`` (or its cause) is ENOSPC/EDQUOT, or ``folder``'s file system is (nearly) full now."""
    for e in _chain(exc):
        if isinstance(e, DiskFullError) or (isinstance(e, OSError) and e.errno in _DISK_FULL_ERRNOS):
            return True
        text = str(e)
        if "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text:
            return True
    if folder is not None:
        try:
            st = os.statvfs(folder)
            return st.f_bavail * st.f_frsize < _FULL_DISK_BYTES
        except OSError:
            return False
    return False


def output_error(path: Path, exc: BaseException) -> NetcompressError:
    """One-line error for a failed write of ``path``: disk full named as disk full."""
    if is_disk_full(exc):
        return DiskFullError(f"disk full (ENOSPC): no space left on the device holding {path}; free space there "
                             "or write to another disk")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
    return OutputError(f"cannot write {path} ({reason}); check the path and its permissions")


@lru_cache(maxsize=1)
def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write through a temporary file in the same folder, then rename: a killed process never leaves a
    half-written file at ``path``, and a failed ``write`` leaves neither ``path`` nor the temporary file.
    The file gets the usual permissions (0666 minus the umask), not the temporary file's 0600."""
    path = Path(path)
    _mkdir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise output_error(path, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except Exception as exc:
        if is_disk_full(exc, path.parent):
            raise output_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) from exc
        if isinstance(exc, OSError):
            raise output_error(path, exc) from None
        raise
    finally:
        for leftover in (tmp_path, tmp_path.parent / (tmp_path.name + ".data")):
            if leftover.exists():
                leftover.unlink()
    return path


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda p: torch.save(obj, p))


def check_input_file(path: Path, what: str) -> None:
    """A readable regular file that fits in memory: not missing, a directory, a device or a FIFO."""
    if not path.exists():
        hint = " (a broken symbolic link)" if path.is_symlink() else ""
        raise CheckpointError(f"{what} {path} does not exist{hint}; check the path")
    if path.is_dir():
        raise CheckpointError(f"{what} {path} is a directory; pass the file itself")
    if not path.is_file():
        raise CheckpointError(f"{what} {path} is not a regular file (a device or pipe); pass a saved file")
    size = path.stat().st_size
    avail = available_memory()
    if size > avail:
        raise CheckpointError(f"{what} {path} is {format_bytes(size)}, more than the {format_bytes(avail)} of "
                              "memory available; it cannot be a weights file for a model that fits here")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{what} {path} is not readable (permission denied); check its permissions")


def _check_zip(path: Path, what: str) -> None:
    """Refuse a zip whose members expand beyond memory or by a zip-bomb ratio, before torch reads it."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # torch.load names it corrupt
    total = sum(i.file_size for i in infos)
    bomb = [i.filename for i in infos if i.file_size > _MAX_ZIP_RATIO * max(i.compress_size, 1) + (1 << 16)]
    if bomb or total > available_memory():
        raise CheckpointError(f"{what} {path} declares {format_bytes(total)} of contents"
                              f"{' compressed ' + str(_MAX_ZIP_RATIO) + 'x or more (a zip bomb)' if bomb else ''}; "
                              "torch never writes such files: re-save the weights with safetensors or torch.save")


@lru_cache(maxsize=1)
def _allowed_globals() -> frozenset:
    """The ``module.name`` globals torch's weights-only unpickler accepts (rebuild functions, storages, dtypes)."""
    names = {"collections.OrderedDict", "builtins.set", "builtins.bytearray", "builtins.complex", "_codecs.encode"}
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        names |= set(_get_allowed_globals())
    except Exception:  # noqa: BLE001 - a private helper: fall back to torch's public rebuild names
        names |= {f"torch._utils.{n}" for n in ("_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_tensor")}
    for obj in torch.serialization.get_safe_globals():
        obj = obj[0] if isinstance(obj, tuple) else obj
        names.add(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}")
    return frozenset(names)


def _pickle_bytes(path: Path) -> Optional[bytes]:
    """The pickle stream of a torch zip checkpoint (``*/data.pkl``) or of a plain pickle file."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.endswith("data.pkl")]
                return zf.read(names[0]) if names else None
        return path.read_bytes()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, RuntimeError):
        return None


def pickle_imports(path: Path) -> Optional[list[str]]:
    """The ``module.name`` globals a pickle would import, read from its opcodes without running it;
    None when the file holds no well-formed pickle."""
    data = _pickle_bytes(path)
    if not data:
        return None
    found: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                found.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            if "UNICODE" in op.name or op.name in ("BINSTRING", "SHORT_BINSTRING", "STRING"):
                strings.append(str(arg))
    except (ValueError, pickle.UnpicklingError, EOFError, TypeError, IndexError, KeyError):
        return None
    return list(dict.fromkeys(found))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if "weights_only" in first or "Weights only" in first:  # torch's advice to unpickle code: never relayed
        first = type(exc).__name__
    return first[:200]


def safe_torch_load(path: str | os.PathLike, what: str = "checkpoint",
                    fix: str = "re-create it, or delete it and run again") -> object:
    """``torch.load(weights_only=True)`` with one-line errors that name the file and ``fix``: a file that
    would run code when unpickled is named as such (never loaded), a damaged one as truncated or corrupt."""
    path = Path(path)
    check_input_file(path, what)
    _check_zip(path, what)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr: one line is the rule
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure of the safe unpickler becomes one line
        imports = pickle_imports(path)
        allowed = _allowed_globals()
        unsafe = [g for g in imports or () if g not in allowed and not g.endswith("Storage")]
        if unsafe:
            raise CheckpointError(
                f"{what} {path} holds pickled Python objects that would run code when loaded (it imports "
                f"{', '.join(unsafe[:3])}); netcompress never loads those. If it is yours, re-save only tensors: "
                "torch.save(model.state_dict()) or safetensors") from None
        if not zipfile.is_zipfile(path):
            if imports is not None:
                raise CheckpointError(f"{what} {path} is a plain pickle, not a torch checkpoint; save it with "
                                      "torch.save(model.state_dict()) or as safetensors") from None
            raise CheckpointError(f"{what} {path} is truncated, corrupt or not a torch file (neither a torch zip "
                                  f"archive nor a complete pickle); {fix}") from None
        raise CheckpointError(f"{what} {path} is truncated or corrupt ({_first_line(exc)}); {fix}") from None


def save_weights(model_or_state: nn.Module | dict, path: str | os.PathLike, force: bool = False) -> Path:
    """Save weights as safetensors (``.safetensors``) or a torch state_dict (any other suffix)."""
    from safetensors.torch import save_file

    path = ensure_writable(path, force)
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    state = {k: v.detach().contiguous() for k, v in state.items()}
    if path.suffix == ".safetensors":
        return atomic_write(path, lambda p: save_file(state, str(p)))
    return atomic_torch_save(state, path)


_RESAVE = "re-save the weights with safetensors or torch.save(model.state_dict())"


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state_dict (name -> tensor) from a ``.safetensors`` file or a torch file, never running code."""
    path = Path(path)
    check_input_file(path, "weights file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
            raise CheckpointError(
                f"weights file {path} is truncated or corrupt ({_first_line(exc)}); {_RESAVE}") from None
    state = safe_torch_load(path, "weights file", _RESAVE)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a trainer checkpoint
    if not isinstance(state, dict):
        raise CheckpointError(f"weights file {path} holds a {type(state).__name__}, not a state_dict; {_RESAVE}")
    bad = [(k, v) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        k, v = bad[0]
        raise CheckpointError(f"weights file {path} holds a {type(v).__name__} at key {str(k)[:60]!r}, not a tensor "
                              f"({len(bad)} such entries); it is not a state_dict: {_RESAVE}")
    return state


def _kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    return "float" if dtype.is_floating_point else "integer"


def load_weights_into(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a weights file into ``model``. Refused, naming the keys: a missing or unexpected key, a shape
    mismatch, a dtype of another kind (int64 or bool where the model has floats: never silently cast),
    and NaN/Inf values in a parameter (a diverged run)."""
    state = load_weights(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    kinds = [f"{k}: file {str(state[k].dtype).removeprefix('torch.')} vs model "
             f"{str(own[k].dtype).removeprefix('torch.')}"
             for k in own if k in state and _kind(state[k].dtype) != _kind(own[k].dtype)]
    if missing or unexpected or wrong or kinds:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}")
        if wrong:
            parts.append(f"shape mismatch {wrong[:5]}")
        if kinds:
            parts.append(f"dtype mismatch {kinds[:5]}")
        raise CheckpointError(
            f"weights file {path} does not fit the model ({'; '.join(parts)}); pass the model and "
            "options the weights were trained with")
    params = {name for name, _ in model.named_parameters()}
    bad = {k: int((~torch.isfinite(state[k])).sum()) for k in own
           if k in params and state[k].dtype.is_floating_point and not bool(torch.isfinite(state[k]).all())}
    if bad:
        named = ", ".join(f"{k} ({n} of {state[k].numel()})" for k, n in list(bad.items())[:3])
        raise CheckpointError(f"weights file {path} holds NaN/Inf values in {named}: the training that saved it "
                              "diverged; use an earlier checkpoint or retrain with a lower learning rate")
    model.load_state_dict(state)
    return model
