"""Weight-only low-bit ONNX that runs: Linear / MatMul weights and embedding tables stored at 4 (or 8) bits in blocks
along the input dimension, executed by onnxruntime's ``MatMulNBits`` and ``GatherBlockQuantized`` kernels.

Each output row ``n`` of a weight W (N, K) is cut into blocks of ``block_size`` inputs; a block has one scale (and,
asymmetric, one zero point): ``w = (q - zp) * scale`` with ``q`` in [0, 2^bits). Symmetric blocks use zp = 2^(bits-1)
and scale = max|w| / (2^(bits-1) - 1), so +-max are exact and 0 stays 0. Two 4-bit codes share a byte, the first in
the low nibble. The rewrite is ours (it also takes ``Gemm``, which torch writes for a Linear on 2-D inputs, and
embedding ``Gather``\\ s); the codes can come from round-to-nearest (here) or from a calibrated method (``codes=``).

>>> import torch
>>> w = torch.tensor([[0.3, -1.0, 0.25, 0.0]])
>>> q, scale, zp = block_quantize(w.numpy(), bits=4, block_size=4, symmetric=True)
>>> q.reshape(-1).tolist(), float(scale[0, 0]), zp
([10, 1, 10, 8], 0.1428571492433548, None)
"""
from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from torch import nn

from ..core.config import Config, PositiveInt
from ..core.errors import ConfigError
from ..core.io import atomic_write, ensure_writable

log = logging.getLogger(__name__)
MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class NBitsOnnx(Config):
    """Weight-only quantization of an ONNX graph for onnxruntime's low-bit kernels.

    ``bits``: 4 or 8 per weight; ``block_size``: inputs sharing one scale (smaller = more accurate, more scales);
    ``symmetric``: zero point fixed at the middle code, else one per block; ``accuracy_level``: what the kernel
    computes in (4 = int8 activations through VNNI/AMX dot products, 0 = fp32); ``embeddings``: also store
    ``Gather`` tables (token embeddings) at ``bits``; matrices with fewer than ``min_elements`` weights stay fp32."""

    bits: Literal[4, 8] = 4
    block_size: Literal[16, 32, 64, 128, 256] = 32
    symmetric: bool = True
    accuracy_level: Literal[0, 1, 2, 3, 4] = 4
    embeddings: bool = True
    min_elements: PositiveInt = 4096


def block_quantize(w: np.ndarray, bits: int, block_size: int, symmetric: bool):
    """Round-to-nearest codes of ``w`` (N, K): ``(q (N, blocks, block_size) uint8, scales (N, blocks), zero points
    (N, blocks) uint8 or None)``; K is padded with zeros to whole blocks."""
    w = np.asarray(w, dtype=np.float32)
    n, k = w.shape
    blocks = math.ceil(k / block_size)
    padded = np.zeros((n, blocks * block_size), np.float32)
    padded[:, :k] = w
    x = padded.reshape(n, blocks, block_size)
    top = 2 ** bits - 1
    if symmetric:
        half = 2 ** (bits - 1)
        scale = np.abs(x).max(axis=2) / (half - 1)
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        q = np.clip(np.rint(x / scale[..., None]) + half, 0, top).astype(np.uint8)
        return q, scale, None
    lo, hi = np.minimum(x.min(axis=2), 0), np.maximum(x.max(axis=2), 0)
    scale = ((hi - lo) / top).astype(np.float32)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    zp = np.clip(np.rint(-lo / scale), 0, top).astype(np.uint8)
    q = np.clip(np.rint(x / scale[..., None]) + zp[..., None], 0, top).astype(np.uint8)
    return q, scale, zp


def dequantize_blocks(q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, bits: int, k: int) -> np.ndarray:
    """The float weights (N, K) the codes stand for (what the kernels compute with)."""
    z = (np.float32(2 ** (bits - 1)) if zp is None else zp[..., None].astype(np.float32))
    w = (q.astype(np.float32) - z) * scale[..., None]
    return w.reshape(q.shape[0], -1)[:, :k]


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes along the last axis, ``8 // bits`` per byte, the first in the lowest bits."""
    if bits == 8:
        return codes.astype(np.uint8)
    per = 8 // bits
    c = codes.reshape(*codes.shape[:-1], -1, per).astype(np.uint8)
    out = np.zeros(c.shape[:-1], np.uint8)
    for j in range(per):
        out |= c[..., j] << (bits * j)
    return out


def _pack_zero_points(zp: np.ndarray, bits: int) -> np.ndarray:
    """MatMulNBits zero points: per output row, ``blocks`` codes packed (padded to whole bytes)."""
    n, blocks = zp.shape
    per = 8 // bits
    padded = np.zeros((n, math.ceil(blocks / per) * per), np.uint8)
    padded[:, :blocks] = zp
    return _pack(padded, bits).reshape(-1)


def _initializers(graph) -> dict:
    return {t.name: t for t in graph.initializer}


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            import onnx

            return onnx.helper.get_attribute_value(a)
    return default


def quantize_nbits_onnx(fp32_path: str | Path, out_path: str | Path, config: NBitsOnnx = NBitsOnnx(),
                        force: bool = False, only=None) -> dict:
    """Rewrite the fp32 ONNX file at ``fp32_path`` into ``out_path``: weights of ``MatMul`` / ``Gemm`` (and, with
    ``config.embeddings``, of ``Gather``) become ``MatMulNBits`` / ``GatherBlockQuantized`` codes; ``only`` (a
    function of the (out, in) weight array) narrows which. Returns ``{"layers": {initializer: [rows, cols]},
    "kept_fp32": [...]}``; refuses a graph with nothing to quantize."""
    import onnx
    from onnx import helper, numpy_helper

    out_path = ensure_writable(out_path, force)
    model = onnx.load(str(fp32_path))
    graph = model.graph
    inits = _initializers(graph)
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    new_nodes, new_inits, done, kept = [], [], {}, []
    bits, bs = config.bits, config.block_size

    def codes_for(name: str, w: np.ndarray):
        q, scale, zp = block_quantize(w, bits, bs, config.symmetric)
        done[name] = list(w.shape)
        return q, scale, zp

    for node in graph.node:
        weight = node.input[1] if len(node.input) > 1 else None
        w_init = inits.get(weight) if node.op_type in ("MatMul", "Gemm") else None
        if node.op_type == "Gather" and config.embeddings and node.input[0] in inits and _attr(node, "axis", 0) == 0:
            table = numpy_helper.to_array(inits[node.input[0]])
            if (table.ndim == 2 and table.size >= config.min_elements and table.dtype == np.float32
                    and (bits == 8 or table.shape[1] % 2 == 0) and (only is None or only(table))):
                q, scale, zp = codes_for(node.input[0], table)
                base = f"{node.input[0]}_q{bits}"
                ins = [base, node.input[1], base + "_scales"]
                codes = q.reshape(table.shape[0], -1)[:, :table.shape[1]]  # rows keep their width (no padding)
                new_inits += [numpy_helper.from_array(_pack(codes, bits), base),
                              numpy_helper.from_array(scale, base + "_scales")]
                if zp is not None:
                    packed_zp = _pack_zero_points(zp, bits).reshape(table.shape[0], -1)
                    new_inits.append(numpy_helper.from_array(packed_zp, base + "_zp"))
                    ins.append(base + "_zp")
                new_nodes.append(helper.make_node("GatherBlockQuantized", ins, list(node.output), name=node.name,
                                                  domain=MS_DOMAIN, gather_axis=0, quantize_axis=1, block_size=bs,
                                                  bits=bits))
                continue
        if w_init is None:
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(w_init)
        gemm = node.op_type == "Gemm"
        bias = inits.get(node.input[2]) if gemm and len(node.input) > 2 and node.input[2] else None
        n_out = w.shape[0 if gemm and _attr(node, "transB", 0) else 1] if w.ndim == 2 else -1
        usable = (w.ndim == 2 and w.dtype == np.float32 and w.size >= config.min_elements
                  and not (gemm and (_attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0
                                     or _attr(node, "beta", 1.0) != 1.0))
                  and not (gemm and len(node.input) > 2 and node.input[2]
                           and (bias is None or tuple(bias.dims) != (n_out,))))
        if not usable:
            kept.append(weight)
            new_nodes.append(node)
            continue
        if not gemm or _attr(node, "transB", 0) == 0:
            w = w.T  # (K, N) -> (N, K): MatMulNBits stores output rows
        if only is not None and not only(w):
            kept.append(weight)
            new_nodes.append(node)
            continue
        n, k = w.shape
        q, scale, zp = codes_for(weight, w)
        base = f"{weight}_q{bits}"
        ins = [node.input[0], base, base + "_scales", "", "", node.input[2] if bias is not None else ""]
        new_inits += [numpy_helper.from_array(_pack(q, bits), base), numpy_helper.from_array(scale.reshape(-1),
                                                                                              base + "_scales")]
        if zp is not None:
            new_inits.append(numpy_helper.from_array(_pack_zero_points(zp, bits), base + "_zp"))
            ins[3] = base + "_zp"
        while ins and ins[-1] == "":
            ins.pop()
        kwargs = dict(K=k, N=n, bits=bits, block_size=bs)
        if config.accuracy_level:
            kwargs["accuracy_level"] = config.accuracy_level
        new_nodes.append(helper.make_node("MatMulNBits", ins, list(node.output), name=node.name, domain=MS_DOMAIN,
                                          **kwargs))
    if not done:
        raise ConfigError(f"{fp32_path}: no MatMul/Gemm/Gather weight of at least {config.min_elements} elements "
                          "to quantize; lower NBitsOnnx.min_elements or export another model")
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {name for node in graph.node for name in node.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep + new_inits)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    atomic_write(out_path, lambda p: onnx.save_model(model, str(p)))
    log.info("%d-bit weights (blocks of %d) for %d tensors; %d left in fp32", bits, bs, len(done), len(kept))
    return {"layers": done, "kept_fp32": kept}


def to_nbits_onnx(model: nn.Module, example_inputs, path: str | Path, config: NBitsOnnx = NBitsOnnx(), *,
                  input_names=None, dynamic_dims=None, force: bool = False) -> Path:
    """Export ``model`` to fp32 ONNX (checked by onnxruntime), then store its weights at ``config.bits`` at ``path``.
    The result runs in onnxruntime's CPU provider (``export.ort_session``).

    A model quantized by ``quantize_(model, WeightOnly(...))`` ships exactly its quantized layers, with the codes
    it computes with in torch (its bits, blocks and symmetry override ``config``'s)."""
    import copy

    from ..quantize.weight_only import block_quantizers, remove_block_quant_
    from .onnx import to_onnx

    path = ensure_writable(path, force)
    only = None
    quantizers = block_quantizers(model)
    if quantizers:
        kinds = {(q.bits, q.block_size, q.symmetric) for q in quantizers.values()}
        if len(kinds) > 1:
            raise ConfigError(f"layers are quantized with different settings {sorted(kinds)}; one file holds one "
                              "bit width and block size")
        bits, block_size, symmetric = kinds.pop()
        config = config.replace(bits=bits, block_size=block_size, symmetric=symmetric, min_elements=1)
        model = copy.deepcopy(model)
        remove_block_quant_(model)
        shadows = {_digest(model.get_submodule(n).weight.detach().numpy()) for n in quantizers}
        only = lambda w: _digest(w) in shadows  # noqa: E731 -- the initializers that hold quantized layers
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = to_onnx(model, example_inputs, Path(tmp) / "fp32.onnx", input_names=input_names,
                       dynamic_dims=dynamic_dims)
        quantize_nbits_onnx(fp32, path, config, force=True, only=only)
    return path


def _digest(w: np.ndarray) -> tuple:
    return w.shape, hash(np.ascontiguousarray(w, dtype=np.float32).tobytes())
