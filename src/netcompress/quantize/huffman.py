"""Canonical Huffman coding of small-alphabet symbol streams (cluster indices, sparse index gaps).

Only the code length of each symbol is stored (one byte each); codes are rebuilt canonically, so
the table costs ``alphabet`` bytes.

>>> import numpy as np
>>> s = np.array([0, 0, 0, 1, 2, 0, 1, 0])
>>> lengths = code_lengths(np.bincount(s, minlength=3))
>>> data, nbits = encode(s, lengths)
>>> decode(data, nbits, lengths, len(s)).tolist() == s.tolist()
True
>>> round(entropy_bits(s), 2)
10.39
"""
from __future__ import annotations

import heapq

import numpy as np

from ..core.errors import CheckpointError

MAX_CODE_LEN = 32


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code length per symbol (0 for symbols that never occur)."""
    counts = np.asarray(counts, dtype=np.int64)
    lengths = np.zeros(len(counts), dtype=np.int64)
    used = [i for i in range(len(counts)) if counts[i] > 0]
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    # heap of (count, tiebreak, symbols-in-subtree); each merge deepens every symbol below it
    heap = [(int(counts[i]), i, [i]) for i in used]
    heapq.heapify(heap)
    tie = len(counts)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
        tie += 1
    if lengths.max(initial=0) > MAX_CODE_LEN:
        raise ValueError(f"Huffman code longer than {MAX_CODE_LEN} bits; the alphabet is too skewed")
    return lengths


def canonical_codes(lengths: np.ndarray) -> dict[int, tuple[int, int]]:
    """symbol -> (code, length), codes assigned in (length, symbol) order."""
    order = sorted((int(l), s) for s, l in enumerate(lengths) if l > 0)
    codes, code, prev = {}, 0, 0
    for length, sym in order:
        code <<= (length - prev)
        codes[sym] = (code, length)
        code += 1
        prev = length
    return codes


def encode(symbols: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """(packed bits, number of bits) of ``symbols`` under the canonical code of ``lengths``."""
    symbols = np.asarray(symbols, dtype=np.int64)
    if symbols.size == 0:
        return b"", 0
    codes = canonical_codes(lengths)
    max_len = int(max(l for _, l in codes.values()))
    code_tab = np.zeros(len(lengths), dtype=np.uint64)
    len_tab = np.zeros(len(lengths), dtype=np.int64)
    for s, (c, l) in codes.items():
        code_tab[s], len_tab[s] = c, l
    if (len_tab[symbols] == 0).any():
        raise ValueError("a symbol has no Huffman code (its count was 0)")
    # bit matrix (N, max_len), left-aligned per symbol, then keep the first len bits of each row
    c = code_tab[symbols]
    l = len_tab[symbols]
    shifts = (l[:, None] - 1 - np.arange(max_len)[None, :])
    bits = ((c[:, None] >> np.clip(shifts, 0, None).astype(np.uint64)) & np.uint64(1)).astype(np.uint8)
    keep = shifts >= 0
    flat = bits[keep]
    return np.packbits(flat).tobytes(), int(flat.size)


def decode(data: bytes, nbits: int, lengths: np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`encode`; raises CheckpointError on a stream that does not decode to ``count`` symbols."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    if bits.size < nbits:
        raise CheckpointError("Huffman stream is truncated; the file is damaged")
    codes = canonical_codes(lengths)
    # canonical decode: per length, first code and the symbols of that length in order
    by_len: dict[int, list[int]] = {}
    for sym, (_, l) in sorted(codes.items(), key=lambda kv: kv[1]):
        by_len.setdefault(l, []).append(sym)
    first = {l: codes[syms[0]][0] for l, syms in by_len.items()}
    out = np.empty(count, dtype=np.int64)
    bitlist = bits[:nbits].tolist()
    pos, n, code, length = 0, 0, 0, 0
    for b in bitlist:
        code = (code << 1) | b
        length += 1
        syms = by_len.get(length)
        if syms is not None and 0 <= code - first[length] < len(syms):
            out[n] = syms[code - first[length]]
            n += 1
            code = length = 0
            if n == count:
                break
        elif length > MAX_CODE_LEN:
            raise CheckpointError("invalid Huffman code in the stream; the file is damaged")
        pos += 1
    if n != count:
        raise CheckpointError(f"Huffman stream decoded to {n} symbols, expected {count}; the file is damaged")
    return out


def entropy_bits(symbols: np.ndarray) -> float:
    """Shannon bound: total bits no prefix code of these symbol frequencies can beat."""
    symbols = np.asarray(symbols)
    if symbols.size == 0:
        return 0.0
    counts = np.bincount(symbols.ravel().astype(np.int64))
    p = counts[counts > 0] / symbols.size
    return float(-(p * np.log2(p)).sum() * symbols.size)
