"""Sparse storage (only the nonzeros go to disk) and a sparse execution path for Linear layers.

Storage is a safetensors file (loading never executes code). Each tensor is kept dense or encoded,
whichever is smaller:

* ``CSR()``: rows = dim 0, columns = the flattened rest; int32 row pointers, int16 column indices when
  the row is shorter than 32768 (int32 otherwise), fp32 values.
* ``RelativeIndex(bits)``: Deep Compression's relative index; the flat distance to the previous
  nonzero in ``bits`` (4 or 8) bits, a zero filler entry inserted when a gap exceeds 2^bits - 1.

Values stay fp32, so loading gives back exactly the saved weights.

>>> import tempfile, os
>>> from torch import nn
>>> lin = nn.Linear(64, 8)
>>> with torch.no_grad(): _ = lin.weight.mul_(torch.rand(8, 64) > 0.9)
>>> path = save_sparse(lin, os.path.join(tempfile.mkdtemp(), "lin.safetensors"))
>>> torch.equal(load_sparse(path)["weight"], lin.weight)
True
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core.errors import CheckpointError, ConfigError
from ..core.io import atomic_write, ensure_writable


@dataclass(frozen=True)
class CSR:
    """Compressed sparse rows over ``(dim0, rest)``."""


@dataclass(frozen=True)
class RelativeIndex:
    """Relative (gap) index of ``bits`` bits per nonzero, with zero fillers for long gaps."""

    bits: int = 8

    def __post_init__(self):
        if self.bits not in (4, 8):
            raise ConfigError(f"RelativeIndex.bits must be 4 or 8, got {self.bits!r}")


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict the model would have with every mask baked in (plain names, exact zeros)."""
    out = {}
    for key, value in model.state_dict().items():
        if "parametrizations." not in key:
            out[key] = value.detach().contiguous()
        elif key.endswith(".original"):
            prefix, rest = key.split("parametrizations.", 1)
            pname = rest[: -len(".original")]
            owner = model.get_submodule(prefix.rstrip(".")) if prefix else model
            with torch.no_grad():
                out[prefix + pname] = getattr(owner, pname).detach().contiguous()
    return out


def _to_csr(t: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": we test what we use
        warnings.simplefilter("ignore", UserWarning)
        return t.to_sparse_csr()


def _encode_csr(t: torch.Tensor) -> dict[str, torch.Tensor]:
    rows = t.reshape(t.shape[0], -1) if t.dim() > 1 else t.reshape(1, -1)
    csr = _to_csr(rows)
    col_dtype = torch.int16 if rows.shape[1] < 2**15 else torch.int32
    return {"crow": csr.crow_indices().to(torch.int32), "col": csr.col_indices().to(col_dtype),
            "values": csr.values().contiguous()}


def _decode_csr(parts, shape, dtype) -> torch.Tensor:
    rows = shape[0] if len(shape) > 1 else 1
    cols = int(torch.Size(shape).numel() // rows)
    crow, col, val = parts["crow"].long(), parts["col"].long(), parts["values"]
    dense = torch.zeros(rows, cols, dtype=dtype)
    row_of = torch.repeat_interleave(torch.arange(rows), crow[1:] - crow[:-1])
    dense[row_of, col] = val
    return dense.reshape(shape)


def _encode_relative(t: torch.Tensor, bits: int) -> dict[str, torch.Tensor]:
    flat = t.reshape(-1)
    idx = flat.nonzero().squeeze(1)
    gaps = torch.diff(idx, prepend=torch.tensor([-1])) - 1  # zeros skipped before each nonzero
    cap = 2**bits - 1
    # a gap g > cap becomes g // (cap + 1) filler entries (value 0, gap cap) and a remainder
    fillers = torch.div(gaps, cap + 1, rounding_mode="floor")
    counts = fillers + 1
    out_gaps = torch.full((int(counts.sum()),), cap, dtype=torch.long)
    out_vals = torch.zeros(len(out_gaps), dtype=t.dtype)
    last = torch.cumsum(counts, 0) - 1  # position of each real nonzero
    out_gaps[last] = gaps - fillers * (cap + 1)
    out_vals[last] = flat[idx]
    g8 = out_gaps.to(torch.uint8)
    if bits == 4:
        g8 = torch.cat([g8, torch.zeros(len(g8) % 2, dtype=torch.uint8)])
        g8 = g8[0::2] | (g8[1::2] << 4)
    return {"gaps": g8, "values": out_vals, "count": torch.tensor([len(out_gaps)], dtype=torch.int64)}


def _decode_relative(parts, shape, dtype, bits: int) -> torch.Tensor:
    n = int(parts["count"][0])
    g = parts["gaps"]
    if bits == 4:
        g = torch.stack([g & 15, g >> 4], 1).reshape(-1)
    gaps = g[:n].long()
    pos = torch.cumsum(gaps + 1, 0) - 1
    flat = torch.zeros(torch.Size(shape).numel(), dtype=dtype)
    flat[pos] = parts["values"]
    return flat.reshape(shape)


def _nbytes(parts: dict[str, torch.Tensor]) -> int:
    return sum(p.numel() * p.element_size() for p in parts.values())


def save_sparse(model: nn.Module, path: str | os.PathLike, encoding: CSR | RelativeIndex = CSR(),
                force: bool = False) -> Path:
    """Save ``model``'s (baked) weights keeping only nonzeros where that is smaller; returns the path."""
    if not isinstance(encoding, (CSR, RelativeIndex)):
        raise ConfigError(f"encoding must be CSR() or RelativeIndex(bits), got {encoding!r}")
    from safetensors.torch import save_file

    path = ensure_writable(path, force)
    tensors, meta = {}, {}
    for name, t in plain_state_dict(model).items():
        info = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
        parts = None
        if t.is_floating_point() and t.numel() > 1:
            parts = _encode_csr(t) if isinstance(encoding, CSR) else _encode_relative(t, encoding.bits)
        if parts is not None and _nbytes(parts) < t.numel() * t.element_size():
            info["encoding"] = "csr" if isinstance(encoding, CSR) else f"rel{encoding.bits}"
            tensors.update({f"{name}::{k}": v.contiguous() for k, v in parts.items()})
        else:
            info["encoding"] = "dense"
            tensors[name] = t
        meta[name] = info
    return atomic_write(path, lambda p: save_file(tensors, str(p), metadata={"netcompress.sparse": json.dumps(meta)}))


def load_sparse(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A plain dense state_dict from a :func:`save_sparse` file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"sparse weights file {path} does not exist; check the path")
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get("netcompress.sparse")
            if raw is None:
                raise CheckpointError(f"{path} is not a netcompress sparse file (no metadata); use load_weights")
            meta = json.loads(raw)
            stored = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"sparse weights file {path} is truncated or corrupt ({exc}); re-create it") from None
    state = {}
    for name, info in meta.items():
        shape, dtype, enc = info["shape"], getattr(torch, info["dtype"]), info["encoding"]
        if enc == "dense":
            state[name] = stored[name]
            continue
        parts = {k.split("::", 1)[1]: v for k, v in stored.items() if k.startswith(name + "::")}
        state[name] = (_decode_csr(parts, shape, dtype) if enc == "csr"
                       else _decode_relative(parts, shape, dtype, int(enc[3:])))
    return state


def load_sparse_into(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a sparse file into a plain (unmasked) model of the same architecture."""
    state = load_sparse(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path} does not fit the model ({first}); build the model it was saved from "
                              "and bake its masks (prune.bake_) before loading") from None
    return model


class SparseLinear(nn.Module):
    """A Linear whose weight is a torch sparse CSR matrix: y = W_csr @ x^T (+ b), inference only."""

    def __init__(self, weight_csr: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = weight_csr.shape[1], weight_csr.shape[0]
        self.register_buffer("weight", weight_csr)
        self.register_buffer("bias", None if bias is None else bias.detach().clone().reshape(-1, 1))

    @classmethod
    def from_dense(cls, linear: nn.Linear) -> "SparseLinear":
        with torch.no_grad():
            w = linear.weight.detach()
            return cls(_to_csr(w), linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        xt = x.reshape(-1, self.in_features).t()  # (in, B)
        y = torch.addmm(self.bias, self.weight, xt) if self.bias is not None else self.weight @ xt
        return y.t().reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        nnz = self.weight.values().numel()
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={nnz}"


def sparsify_linears_(model: nn.Module, min_sparsity: float = 0.9) -> list[str]:
    """Replace (baked) Linear layers at least ``min_sparsity`` sparse by :class:`SparseLinear`, in place.

    Pick ``min_sparsity`` from the measured break-even (benchmarks/prune_sparse_exec.py): below it the
    dense kernel is faster. Returns the names of the replaced layers."""
    if not 0 <= min_sparsity <= 1:
        raise ConfigError(f"min_sparsity must be in [0, 1], got {min_sparsity!r}")
    if any(hasattr(m, "parametrizations") for m in model.modules()):
        raise ConfigError("the model still carries masks; call prune.bake_(model) first")
    replaced = []
    for name, mod in list(model.named_modules()):
        for cname, child in list(mod.named_children()):
            if type(child) is nn.Linear and float((child.weight == 0).float().mean()) >= min_sparsity:
                setattr(mod, cname, SparseLinear.from_dense(child))
                replaced.append(f"{name}.{cname}" if name else cname)
    return replaced
