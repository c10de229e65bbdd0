"""Real int8 through onnxruntime: QDQ static (calibrated by our observers) and dynamic.

The graph rewrite is onnxruntime's own (``onnxruntime.quantization``): it knows which fused int8
kernels its CPU provider has. What we add is the calibration: every activation tensor is observed
by a netcompress observer (min/max, moving average, percentile or MSE-optimal clipping) on the
fp32 graph, and the chosen ranges are handed to the rewrite as its calibration cache; and the
defaults are the fast path of this CPU: u8 activations x s8 weights per output channel
(s8 x s8 takes a reference path that is ~3x slower; u8 weights are ~2x slower in dynamic mode).
On a CPU with AMX-INT8, wide convs get their s8 weights stored with zero point -1 (the same values), which moves
them from onnxruntime's AVX-512 VNNI conv kernel to its AMX GEMM (``Int8Onnx.amx_conv_channels``).
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from ..core.config import Config, PositiveInt
from ..core.data import iter_inputs
from ..core.errors import ConfigError
from ..core.io import atomic_write, ensure_writable
from ..quantize.observers import Observer
from .onnx import ExportError, to_onnx

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Int8Onnx(Config):
    """How to quantize an ONNX graph: ``static`` (calibrated activations) or ``dynamic`` (ranges at run time)."""

    static: bool = True
    activation_type: Literal["u8", "s8"] = "u8"
    weight_type: Literal["s8", "u8"] = "s8"
    per_channel: bool = True
    observer: Observer | None = None  # None = MinMax
    calib_batches: PositiveInt = 16
    batch_size: PositiveInt = 32
    op_types: tuple[str, ...] | None = None  # None = every op type onnxruntime can quantize
    pre_process: bool = True
    # MatMuls of two activations (attention's QK^T and AV) in int8 too; onnxruntime's dynamic default leaves
    # them in fp32. Measured on a MiniLM-shaped encoder (issue 5): 1.12x faster at batch 32, 3% slower at
    # batch 1 (quantizing small per-head matrices costs more than it saves), so off by default.
    activation_matmuls: bool = False
    # Static QDQ convs with at least this many output channels get their symmetric s8 weights stored as (q - 1) with
    # zero point -1: the same dequantized values (symmetric weights use -127..127), but onnxruntime sends a conv
    # whose weight zero point is not 0 through im2col + its QGEMM, which is AMX on a CPU with AMX-INT8, instead of
    # its symmetric AVX-512 VNNI conv kernel. ResNet-20 on the AMX Xeon (RESULTS.md issue 5): the 64-channel stage
    # 13-17% faster at batch 32, equal at batch 1; at 16 and 32 channels AMX is slower (im2col cost, half-empty
    # tiles), hence the threshold. "auto" = 64 where this CPU has AMX-INT8, else off; None = off.
    amx_conv_channels: PositiveInt | Literal["auto"] | None = "auto"
    # Leave convs whose input channels are not a multiple of 4 (a stem on grey or RGB images) in fp32: onnxruntime's
    # symmetric int8 conv kernel needs a multiple of 4, so it runs them as byte-wise im2col + GEMM, 2.5x slower than
    # its fp32 conv for ResNet-20's 1-channel stem (28 vs 11 us at batch 1). The fp32 output then enters the NHWC
    # int8 graph through extra Transposes, so the net gain is small (RESULTS.md issue 5, AMX machine).
    fp32_narrow_convs: bool = False
    # static graphs: "QDQ" (Q/DQ pairs around float ops; onnxruntime fuses them) or "QOperator" (QLinearConv etc.
    # written out). onnxruntime optimizes both into the same graph here (RESULTS.md issue 5, AMX machine); QOperator
    # is for runtimes that do not fuse QDQ. The AMX zero-point form applies to QDQ only.
    quant_format: Literal["QDQ", "QOperator"] = "QDQ"


def cpu_has_amx_int8() -> bool:
    """Whether this CPU reports AMX-INT8 (Linux /proc/cpuinfo; False where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(line.startswith("flags") and "amx_int8" in line.split() for line in text.splitlines())


def _amx_channels(config: Int8Onnx) -> int | None:
    if config.amx_conv_channels == "auto":
        return 64 if cpu_has_amx_int8() else None
    return config.amx_conv_channels


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return QuantType.QUInt8 if name == "u8" else QuantType.QInt8


def _float_tensors(model) -> list[str]:
    """Non-initializer float tensors produced or consumed by nodes (what the rewrite may quantize)."""
    import onnx

    inits = {i.name for i in model.graph.initializer}
    vis = {vi.name: vi for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    names = []
    for node in model.graph.node:
        for t in list(node.input) + list(node.output):
            vi = vis.get(t)
            if (vi is not None and t not in inits and t not in names and vi.type.HasField("tensor_type")
                    and vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT):
                names.append(t)
    return names


def _constant_ints(model, name: str):
    """The integer values of initializer or Constant-node ``name``, or None when it is computed at run time."""
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            return [int(v) for v in numpy_helper.to_array(init).reshape(-1)]
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return [int(v) for v in numpy_helper.to_array(node.attribute[0].t).reshape(-1)]
    return None


def spatial_means_to_gap(model) -> int:
    """Rewrite ``ReduceMean`` over H and W of a 4-D tensor (keepdims) into ``GlobalAveragePool``, in place.

    torch exports ``AdaptiveAvgPool2d(1)`` as ReduceMean, which onnxruntime's quantizer leaves in
    float: the int8 graph then dequantizes the whole last feature map, averages in fp32 and
    quantizes again. GlobalAveragePool computes the same thing and has a fused int8 kernel
    (QLinearGlobalAveragePool, NHWC). Returns how many nodes were rewritten."""
    import onnx

    ranks = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in
             list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
             if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape")}
    done = 0
    for i, node in enumerate(model.graph.node):
        if node.op_type != "ReduceMean" or ranks.get(node.input[0]) != 4:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        axes = attrs.get("axes") if len(node.input) < 2 else _constant_ints(model, node.input[1])
        if attrs.get("keepdims", 1) != 1 or axes is None or sorted(a % 4 for a in axes) != [2, 3]:
            continue
        gap = onnx.helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=node.name)
        model.graph.node.remove(node)
        model.graph.node.insert(i, gap)
        done += 1
    if done:  # drop the axes constants no node reads any more
        used = {t for n in model.graph.node for t in n.input}
        for init in [i for i in model.graph.initializer if i.name not in used]:
            model.graph.initializer.remove(init)
    return done


def narrow_convs(model) -> list[str]:
    """Names of the Conv nodes whose weight has a per-group input channel count that is not a multiple of 4."""
    inits = {i.name: i for i in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type == "Conv" and n.input[1] in inits and inits[n.input[1]].dims[1] % 4]


def wide_convs_to_qgemm(model, min_channels: int) -> int:
    """Store the symmetric s8 weights of QDQ convs with >= ``min_channels`` output channels as (q - 1) with zero
    point -1, in place; returns how many convs were changed. Exact: onnxruntime's symmetric s8 weights lie in
    -127..127, so q - 1 fits in s8 and (q - 1 - (-1)) * scale is the same weight. What changes is the kernel:
    onnxruntime takes its symmetric conv kernel only when every weight zero point is 0 (see ``Int8Onnx``)."""
    import onnx
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    uses: dict[str, int] = {}
    for n in model.graph.node:
        for t in n.input:
            uses[t] = uses.get(t, 0) + 1
    done = 0
    for node in model.graph.node:
        dq = producer.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3:
            continue
        w, zp = inits.get(dq.input[0]), inits.get(dq.input[2])
        # a weight or zero point shared with another node would change that node too
        if w is None or zp is None or w.data_type != onnx.TensorProto.INT8 or uses[w.name] + uses[zp.name] != 2:
            continue
        q, z = numpy_helper.to_array(w), numpy_helper.to_array(zp)
        if q.shape[0] < min_channels or np.any(z != 0) or q.min() < -127:
            continue
        w.CopyFrom(numpy_helper.from_array((q.astype(np.int16) - 1).astype(np.int8), w.name))
        zp.CopyFrom(numpy_helper.from_array(np.full(z.shape, -1, np.int8), zp.name))
        done += 1
    return done


def observe_onnx(path: str | Path, data, observer=None, batches: int = 16, batch_size: int = 32) -> dict:
    """Run ``data`` through the fp32 graph at ``path`` and return {tensor name: (lo, hi)} chosen by ``observer``."""
    import onnx

    from ..quantize.observers import MinMax, RangeTracker
    from ..quantize.primitives import PerTensor, QuantSpec
    from .onnx import ort_session

    model = onnx.load(str(path))
    names = _float_tensors(model)
    outputs = {o.name for o in model.graph.output}
    for n in names:
        if n not in outputs:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    trackers = {n: RangeTracker() for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        aug = Path(tmp) / "augmented.onnx"
        onnx.save(model, str(aug))
        sess = ort_session(aug, threads=1)
        in_name = sess.get_inputs()[0].name
        out_names = [o.name for o in sess.get_outputs()]
        for x in iter_inputs(data, batch_size=batch_size, max_batches=batches):
            values = sess.run(out_names, {in_name: x.detach().cpu().numpy().astype(np.float32)})
            for n, v in zip(out_names, values):
                if n in trackers and v.size:
                    trackers[n].update(torch.from_numpy(np.ascontiguousarray(v)))
    spec = QuantSpec(8, False, PerTensor())
    obs = observer or MinMax()
    ranges = {}
    for n, t in trackers.items():
        if t.min is None:
            continue
        lo, hi = obs.clip(t, spec)
        ranges[n] = (float(lo.reshape(-1)[0]), float(hi.reshape(-1)[0]))
    return ranges


def quantize_onnx(fp32_path: str | Path, out_path: str | Path, config: Int8Onnx = Int8Onnx(), data=None,
                  force: bool = False) -> Path:
    """Quantize the fp32 ONNX graph at ``fp32_path`` into ``out_path`` (QDQ static or dynamic)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_dynamic, quantize_static
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out_path = ensure_writable(out_path, force)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(fp32_path).resolve()  # absolute: pre-processing runs in tmp
        if config.pre_process:
            pre = Path(tmp) / "pre.onnx"
            # in the temporary folder: where symbolic shape inference fails, onnxruntime dumps the partial graph and
            # its weights (sym_shape_infer_temp.onnx + <uuid>.data, 90 MB for MiniLM) into the working directory
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), contextlib.chdir(tmp):
                warnings.simplefilter("ignore")
                try:
                    quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
                except Exception as exc:
                    # it gives up on some dynamic-length graphs (a text encoder's seq dim); ONNX's own shape
                    # inference and onnxruntime's graph optimisations still run
                    log.info("symbolic shape inference failed (%s); pre-processing without it", exc)
                    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            src = pre
        graph = onnx.load(str(src))
        if spatial_means_to_gap(graph):
            src = Path(tmp) / "gap.onnx"
            onnx.save(graph, str(src))
        op_types = list(config.op_types) if config.op_types else None
        exclude = narrow_convs(graph) if config.fp32_narrow_convs else []
        extra = {"MatMulConstBOnly": not config.activation_matmuls}

        def write(dst: Path):
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if not config.static:
                    quantize_dynamic(str(src), str(dst), per_channel=config.per_channel,
                                     weight_type=_qtype(config.weight_type), op_types_to_quantize=op_types,
                                     extra_options=extra)
                    return
                ranges = observe_onnx(src, data, config.observer, config.calib_batches, config.batch_size)
                cache = Path(tmp) / "calib.json"
                save_tensors_data(TensorsData(CalibrationMethod.MinMax, {
                    k: (np.array(lo, dtype=np.float32), np.array(hi, dtype=np.float32))
                    for k, (lo, hi) in ranges.items()}),
                    cache)
                quantize_static(str(src), str(dst), calibration_data_reader=None, calibration_cache_path=str(cache),
                                quant_format=getattr(QuantFormat, config.quant_format), per_channel=config.per_channel,
                                activation_type=_qtype(config.activation_type),
                                weight_type=_qtype(config.weight_type), calibrate_method=CalibrationMethod.MinMax,
                                op_types_to_quantize=op_types, nodes_to_exclude=exclude, extra_options=extra)
                channels = _amx_channels(config)
                if channels is not None:
                    q = onnx.load(str(dst))
                    if wide_convs_to_qgemm(q, channels):
                        onnx.save(q, str(dst))

        try:
            atomic_write(out_path, write)
        except (ConfigError, ExportError):
            raise
        except Exception as exc:
            if type(exc).__module__.startswith("netcompress"):
                raise
            raise ExportError(f"onnxruntime could not quantize {fp32_path}: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return out_path


def to_int8_onnx(model: nn.Module, example_inputs, path: str | Path, config: Int8Onnx = Int8Onnx(), data=None,
                 force: bool = False, verify_atol: float | None = None) -> Path:
    """Export ``model`` to fp32 ONNX, then quantize it to int8 at ``path`` (calibrated on ``data`` if static).

    ``verify_atol`` checks the int8 graph against the torch fp32 model's output on ``example_inputs``."""
    if config.static and data is None:
        from ..core.errors import DataError

        raise DataError("static int8 needs calibration data; pass data=... or use Int8Onnx(static=False)")
    path = ensure_writable(path, force)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = to_onnx(model, example_inputs, Path(tmp) / "fp32.onnx")
        quantize_onnx(fp32, path, config, data, force=True)
    if verify_atol is not None:
        from .onnx import check_onnx

        check_onnx(model, path, example_inputs, atol=verify_atol, rtol=0.0)
    return path
