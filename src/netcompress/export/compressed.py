"""The compressed artifact (``.ncz``): pruned + shared-value weights, Huffman-coded, restored bit-exactly.

Layout::

    b"NCZ1" | u16 version | u32 header length | header (zlib-compressed JSON) | payload | u32 CRC-32 of all before

Each tensor of the model's effective state (parametrizations evaluated: masks, clusters, fake-quant
weights) is stored as one of

- ``raw``: its bytes as they are (biases, BN statistics, tensors with many distinct values);
- ``dense``: a codebook of its distinct nonzero values (float32, exact) and a Huffman-coded index
  per element, symbol 0 meaning an exact zero;
- ``sparse``: the same codebook, Huffman-coded indices of the nonzeros only, and the Huffman-coded
  gaps between nonzero positions (gaps longer than 2^b insert a filler symbol, Han et al. 2016);
- ``sparse_values``: pruned but not shared: the nonzero float32 values and the coded gaps.

The smallest of these is chosen per tensor (and the best gap width b); the file holds the code
length tables, so everything needed to decode is counted in its bytes.
Loading never executes code: it is JSON and arrays.

>>> import torch, tempfile, os
>>> from torch import nn
>>> m = nn.Linear(64, 32)
>>> with torch.no_grad(): _ = m.weight.copy_(torch.randint(-2, 3, (32, 64)).float() * 0.25)
>>> path = os.path.join(tempfile.mkdtemp(), "m.ncz")
>>> _ = save_compressed(m, path)
>>> state = load_compressed(path)
>>> all(torch.equal(state[k], v) for k, v in m.state_dict().items())
True
"""
from __future__ import annotations

import json
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.errors import CheckpointError, ModelError
from ..core.io import atomic_write, ensure_writable
from ..quantize import huffman

log = logging.getLogger(__name__)

MAGIC = b"NCZ1"
VERSION = 1
MAX_CODEBOOK = 256
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int64": torch.int64,
           "int32": torch.int32, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool, "float64": torch.float64}


def effective_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state a plain copy of ``model`` would have: parametrized tensors evaluated (mask * weight,
    shared centroids, fake-quant weights), their originals and quantizer buffers dropped."""
    from torch.nn.utils import parametrize

    state = {}
    for k, v in model.state_dict().items():
        if "parametrizations." in k or ".input_quant." in k or k.startswith("input_quant."):
            continue
        state[k] = v.detach()
    for name, mod in model.named_modules():
        if parametrize.is_parametrized(mod):
            for tname in mod.parametrizations.keys():
                with torch.no_grad():
                    state[f"{name}.{tname}" if name else tname] = getattr(mod, tname).detach().clone()
    return state


def _huff(symbols: np.ndarray, alphabet: int) -> dict:
    counts = np.bincount(symbols, minlength=alphabet) if symbols.size else np.zeros(alphabet, dtype=np.int64)
    lengths = huffman.code_lengths(counts) if symbols.size else np.zeros(alphabet, dtype=np.int64)
    data, nbits = huffman.encode(symbols, lengths)
    return {"lengths": lengths.astype(np.uint8).tobytes(), "data": data, "nbits": nbits, "count": int(symbols.size),
            "entropy_bits": huffman.entropy_bits(symbols)}


def _stream_bytes(s: dict) -> int:
    return len(s["lengths"]) + len(s["data"])


def _encode_tensor(t: torch.Tensor) -> tuple[dict, list[bytes]]:
    """(header entry, payload chunks) for one tensor: the smallest of raw / dense / sparse."""
    arr = t.detach().cpu().contiguous()
    raw = {"encoding": "raw"}
    raw_bytes = (arr.numpy() if arr.dtype == torch.bool else arr.reshape(-1).view(torch.uint8).numpy()).tobytes()
    if arr.dtype != torch.float32 or arr.numel() < 64:
        return raw, [raw_bytes]
    flat = arr.flatten()
    nz = flat != 0
    values = flat[nz]
    positions = np.flatnonzero(nz.numpy())
    book = torch.unique(values)
    if book.numel() > MAX_CODEBOOK:  # many distinct values (e.g. pruned only): raw values at coded positions
        value_bytes = values.numpy().astype(np.float32).tobytes()
        b, gap_stream = _best_gap_stream(positions)
        if len(value_bytes) + _stream_bytes(gap_stream) >= len(raw_bytes):
            return raw, [raw_bytes]
        entry = {"encoding": "sparse_values", "gap_bits": b, "nonzero": int(positions.size),
                 "streams": [_stream_entry(gap_stream)]}
        return entry, [value_bytes, gap_stream["lengths"], gap_stream["data"]]
    book_bytes = book.numpy().astype(np.float32).tobytes()
    idx = torch.searchsorted(book, values).numpy().astype(np.int64)
    # dense: symbol 0 is an exact zero, symbol i + 1 the i-th codebook value
    dense_syms = np.zeros(flat.numel(), dtype=np.int64)
    dense_syms[nz.numpy()] = idx + 1
    best = ({"encoding": "dense", "book": int(book.numel())}, [_huff(dense_syms, book.numel() + 1)])
    best_size = sum(map(_stream_bytes, best[1]))
    b, gap_stream = _best_gap_stream(positions)
    streams = [_huff(idx, book.numel()), gap_stream]
    if sum(map(_stream_bytes, streams)) < best_size:
        best = ({"encoding": "sparse", "book": int(book.numel()), "gap_bits": b, "nonzero": int(positions.size)},
                streams)
        best_size = sum(map(_stream_bytes, streams))
    if best_size + len(book_bytes) >= len(raw_bytes):
        return raw, [raw_bytes]
    entry, streams = best
    entry["streams"] = [_stream_entry(s) for s in streams]
    chunks = [book_bytes]
    for s in streams:
        chunks += [s["lengths"], s["data"]]
    return entry, chunks


def _stream_entry(s: dict) -> dict:
    return {"count": s["count"], "nbits": s["nbits"], "alphabet": len(s["lengths"]), "data_len": len(s["data"]),
            "entropy_bits": s["entropy_bits"]}


def _gap_symbols(positions: np.ndarray, b: int) -> np.ndarray:
    """Relative index coding: symbol g < 2^b means "next nonzero is g + 1 further on"; symbol 2^b is a
    filler that advances 2^b with no weight (Han et al. store a zero weight there instead)."""
    span = 1 << b
    gaps = np.diff(np.concatenate([[-1], positions]))  # >= 1
    n_fill = (gaps - 1) // span
    real_at = np.cumsum(n_fill + 1) - 1
    syms = np.full(int(n_fill.sum()) + positions.size, span, dtype=np.int64)
    syms[real_at] = gaps - n_fill * span - 1
    return syms


def _best_gap_stream(positions: np.ndarray) -> tuple[int, dict]:
    """The gap width b (2..8) whose Huffman-coded stream (table included) is smallest."""
    best = None
    for b in range(2, 9):
        stream = _huff(_gap_symbols(positions, b), (1 << b) + 1)
        if best is None or _stream_bytes(stream) < _stream_bytes(best[1]):
            best = (b, stream)
    return best


def _positions(gap_syms: np.ndarray, b: int) -> np.ndarray:
    span = 1 << b
    advance = np.where(gap_syms == span, span, gap_syms + 1)
    return (np.cumsum(advance) - 1)[gap_syms != span]


def save_compressed(model_or_state: nn.Module | dict, path: str | Path, force: bool = False,
                    meta: dict | None = None) -> Path:
    """Write the effective state of ``model_or_state`` to ``path`` in the compressed format."""
    state = effective_state_dict(model_or_state) if isinstance(model_or_state, nn.Module) else dict(model_or_state)
    path = ensure_writable(path, force)
    entries, payload, offset = [], [], 0
    for name, t in state.items():
        dtype = str(t.dtype).replace("torch.", "")
        if dtype not in _DTYPES:
            raise ModelError(f"tensor {name!r} has dtype {dtype}, which the compressed format does not store")
        entry, chunks = _encode_tensor(t)
        size = sum(len(c) for c in chunks)
        entry.update({"name": name, "shape": list(t.shape), "dtype": dtype, "offset": offset, "length": size})
        entries.append(entry)
        payload += chunks
        offset += size
    header = zlib.compress(json.dumps({"format": "netcompress-compressed", "tensors": entries, "meta": meta or {}},
                                      separators=(",", ":")).encode(), 9)
    body = MAGIC + struct.pack("<HI", VERSION, len(header)) + header + b"".join(payload)
    blob = body + struct.pack("<I", zlib.crc32(body))
    return atomic_write(path, lambda p: p.write_bytes(blob))


def _read(path: str | Path) -> tuple[dict, bytes]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"compressed file {path} does not exist; check the path")
    blob = path.read_bytes()
    if blob[:4] != MAGIC:
        raise CheckpointError(f"{path} is not a netcompress compressed file (bad magic); save it with save_compressed")
    if len(blob) < 14:
        raise CheckpointError(f"{path} is truncated ({len(blob)} bytes); re-create it with save_compressed")
    version, hlen = struct.unpack("<HI", blob[4:10])
    if version != VERSION:
        raise CheckpointError(f"{path} is compressed-format version {version}; this netcompress reads version "
                              f"{VERSION}: re-save it with the netcompress that reads it, or upgrade")
    if zlib.crc32(blob[:-4]) != struct.unpack("<I", blob[-4:])[0]:
        raise CheckpointError(f"{path} is truncated or corrupt (checksum mismatch); re-create it with save_compressed")
    header = json.loads(zlib.decompress(blob[10:10 + hlen]).decode())
    return header, blob[10 + hlen:-4]


def _decode_tensor(entry: dict, buf: bytes) -> torch.Tensor:
    dtype = _DTYPES[entry["dtype"]]
    shape = tuple(entry["shape"])
    if entry["encoding"] == "raw":
        if dtype == torch.bool:
            return torch.from_numpy(np.frombuffer(buf, dtype=np.bool_).copy()).reshape(shape)
        return torch.frombuffer(bytearray(buf), dtype=torch.uint8).view(dtype).reshape(shape).clone()
    n = int(np.prod(shape)) if shape else 1
    out = np.zeros(n, dtype=np.float32)
    if entry["encoding"] == "sparse_values":
        nnz = entry["nonzero"]
        values = np.frombuffer(buf[:4 * nnz], dtype=np.float32)
        (gaps,) = _read_streams(entry, buf, 4 * nnz)
        positions = _positions(gaps, entry["gap_bits"])
        _check_positions(positions, nnz, n)
        out[positions] = values
        return torch.from_numpy(out).reshape(shape)
    k = entry["book"]
    book = np.frombuffer(buf[:4 * k], dtype=np.float32)
    syms = _read_streams(entry, buf, 4 * k)
    if entry["encoding"] == "dense":
        d = syms[0]
        out[d > 0] = book[d[d > 0] - 1]
    else:
        vals, gaps = syms
        positions = _positions(gaps, entry["gap_bits"])
        _check_positions(positions, vals.size, n)
        out[positions] = book[vals]
    return torch.from_numpy(out).reshape(shape)


def _read_streams(entry: dict, buf: bytes, pos: int) -> list[np.ndarray]:
    out = []
    for s in entry["streams"]:
        lengths = np.frombuffer(buf[pos:pos + s["alphabet"]], dtype=np.uint8).astype(np.int64)
        pos += s["alphabet"]
        out.append(huffman.decode(buf[pos:pos + s["data_len"]], s["nbits"], lengths, s["count"]))
        pos += s["data_len"]
    return out


def _check_positions(positions: np.ndarray, expected: int, n: int) -> None:
    if positions.size != expected or (positions.size and positions[-1] >= n):
        raise CheckpointError("sparse index gaps do not match the tensor; the file is damaged")


def load_compressed(path: str | Path, model: nn.Module | None = None) -> dict[str, torch.Tensor] | nn.Module:
    """The state dict stored at ``path``; with ``model`` (a plain model of the same architecture),
    loads it into the model and returns the model."""
    header, payload = _read(path)
    state = {}
    for e in header["tensors"]:
        buf = payload[e["offset"]:e["offset"] + e["length"]]
        if len(buf) != e["length"]:
            raise CheckpointError(f"{path} is truncated inside tensor {e['name']!r}")
        state[e["name"]] = _decode_tensor(e, buf)
    if model is None:
        return state
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit {type(model).__name__}: {str(exc).splitlines()[0]}; "
                              "load it into a plain (un-parametrized) model of the same architecture") from None
    return model


def compression_table(path: str | Path) -> list[dict]:
    """Per stored tensor: weights kept, bits per stored weight index and per position index, bytes,
    compression vs dense float32, and the entropy bound of its symbols."""
    header, _ = _read(path)
    rows = []
    for e in header["tensors"]:
        n = int(np.prod(e["shape"])) if e["shape"] else 1
        dense_bytes = n * 4
        row = {"tensor": e["name"], "params": n, "encoding": e["encoding"], "bytes": e["length"],
               "compression": dense_bytes / max(e["length"], 1)}
        if e["encoding"] != "raw":
            s = e["streams"]
            kept = e.get("nonzero", n)
            row["kept_pct"] = 100.0 * kept / n
            if "gap_bits" in e:  # entries of the gap stream (nonzeros + fillers) and its fixed width
                row["gap_entries"], row["gap_bits"] = s[-1]["count"], e["gap_bits"]
            if e["encoding"] == "sparse_values":
                row["weight_bits"], row["index_bits"] = 32.0, s[0]["nbits"] / max(kept, 1)
                row["entropy_bytes"] = 4 * kept + s[0]["entropy_bits"] / 8
            else:
                row["book"] = e["book"]
                row["weight_bits"] = s[0]["nbits"] / max(kept, 1)
                row["index_bits"] = s[1]["nbits"] / max(kept, 1) if len(s) > 1 else 0.0
                row["entropy_bytes"] = 4 * e["book"] + sum(x["entropy_bits"] for x in s) / 8
        rows.append(row)
    return rows
