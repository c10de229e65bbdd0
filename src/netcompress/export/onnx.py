"""ONNX export with an onnxruntime check: the deployed graph must compute what torch computes."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..core.errors import ModelError, NetcompressError
from ..core.io import atomic_write, ensure_writable

log = logging.getLogger(__name__)


class ExportError(NetcompressError):
    """The model cannot be exported, or onnxruntime disagrees with torch."""


def export_graph(model, args, path: Path, opset: int, dims: Mapping[int, str], names: list[str], dynamo: bool):
    """The bare torch -> ONNX export (no check, no clean-up; :func:`to_onnx` adds them). ``dims``: {dimension
    index: name} made dynamic in every input (the same name = the same size)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if dynamo:
            # one Dim object per name, shared by all inputs: ids and mask of a batch have equal sizes
            symbols = {n: torch.export.Dim(n, min=1) for n in set(dims.values())}
            shapes = tuple({d: symbols[n] for d, n in dims.items()} for _ in args) if dims else None
            torch.onnx.export(model, args, str(path), input_names=names, output_names=["output"], dynamo=True,
                              opset_version=opset, dynamic_shapes=shapes, verbose=False)
        else:
            axes = {n: dict(dims) for n in names} if dims else None
            if axes is not None and 0 in dims:
                axes["output"] = {0: dims[0]}
            torch.onnx.export(model, args, str(path), input_names=names, output_names=["output"],
                              dynamo=False, opset_version=opset, dynamic_axes=axes)


def _inline_external_data(path: Path) -> None:
    """The torch.export-based exporter may put weights in ``<file>.data`` beside the graph; written
    through a temporary name, that side file would keep the temporary name. Models here are far
    below protobuf's 2 GB limit, so the weights are moved into the one .onnx file."""
    side = path.parent / (path.name + ".data")
    if not side.exists():
        return
    import onnx

    model = onnx.load(str(path))  # reads the side file
    onnx.save_model(model, str(path), save_as_external_data=False)
    side.unlink()


def _strip_debug_info(model) -> int:
    """Drop the exporter's debug metadata (per-node stack traces with local file paths and FX node dumps,
    the graph's ExportedProgram signature) and doc strings: a large share of a small int8 file, and nothing a
    shipped artifact needs. Returns how many entries were removed."""
    removed = 0
    graphs = [model.graph]
    while graphs:
        g = graphs.pop()
        g.doc_string = ""
        removed += len(g.metadata_props)
        del g.metadata_props[:]
        for node in g.node:
            removed += len(node.metadata_props)
            del node.metadata_props[:]
            node.doc_string = ""
            for a in node.attribute:
                graphs.extend([a.g] if a.HasField("g") else [])
                graphs.extend(a.graphs)
        for vi in list(g.value_info) + list(g.input) + list(g.output):
            vi.doc_string = ""
    return removed


def _short_name(i: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        i, r = divmod(i, 36)
        out = digits[r] + out
        if i == 0:
            return "t" + out


def compact_onnx(path: str | Path, out: str | Path | None = None, force: bool = False) -> Path:
    """Rewrite the ONNX file at ``path`` (or into ``out``) for shipping: debug metadata stripped and every
    internal tensor and node renamed to a short id (``t1f``); the graph's input and output names stay,
    so callers feeding ``{"input": x}`` are unaffected. Computation is unchanged (a pure renaming).

    Names such as ``layer3.0.conv2.weight_DequantizeLinear_Output`` are a sizeable share of a small int8
    model's bytes; they help reading the graph, not running it."""
    import onnx

    model = onnx.load(str(path))
    _strip_debug_info(model)
    g = model.graph
    if any(a.HasField("g") or len(a.graphs) for n in g.node for a in n.attribute):
        raise ExportError(f"{path}: graphs with subgraphs (If/Loop/Scan) are not compacted")
    keep = {v.name for v in list(g.input) + list(g.output)}
    mapping: dict[str, str] = {}

    def new(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in mapping:
            mapping[name] = _short_name(len(mapping))
        return mapping[name]

    for t in g.initializer:
        t.name = new(t.name)
    for vi in g.value_info:
        vi.name = new(vi.name)
    for i, node in enumerate(g.node):
        node.name = f"n{i:x}"
        ins, outs = [new(n) for n in node.input], [new(n) for n in node.output]
        del node.input[:], node.output[:]
        node.input.extend(ins)
        node.output.extend(outs)
    for vi in list(g.input):  # initializers listed as graph inputs (old exporters) keep matching
        if vi.name in mapping:
            vi.name = mapping[vi.name]
    target = ensure_writable(out, force) if out is not None else Path(path)
    atomic_write(target, lambda p: onnx.save_model(model, str(p)))
    return target


# Opset 20 has a single Gelu op; at 18 the exporter writes Div-Erf-Add-Mul-Mul, which onnxruntime does not fuse
# back, so GELU models run faster in onnxruntime (fp32 and int8) exported at 20.
DEFAULT_OPSET = 20
# torch's torch.export-based exporter writes opset 18 and up (asked for less, it silently wrote 18); the upper end
# is the newest opset torch 2.13's exporter knows (onnxruntime loads it).
MIN_OPSET, MAX_OPSET = 18, 23


def check_opset(opset: int) -> int:
    """``opset`` if this exporter writes exactly that opset, else ConfigError naming the range."""
    from ..core.errors import ConfigError

    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(f"ONNX opset {opset!r} is not supported; choose {MIN_OPSET}..{MAX_OPSET} "
                          f"(default {DEFAULT_OPSET})")
    return opset


def file_opset(path: str | Path) -> int:
    """The default-domain (ai.onnx) opset of the ONNX file at ``path``."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def nonfinite_tensors(model: nn.Module) -> list[str]:
    """Names of parameters and buffers holding NaN or Inf, with how many values: ``fc.weight (3 of 500)``."""
    out = []
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            out.append(f"{name} ({int((~torch.isfinite(t)).sum())} of {t.numel()})")
    return out


def _refuse_nonfinite(model: nn.Module, where: str) -> None:
    bad = [n for n in nonfinite_tensors(model) if n.split(" ")[0] in dict(model.named_parameters())]
    if bad:
        raise ExportError(f"{where}: the model's weights hold NaN/Inf values in {', '.join(bad[:3])}: the training "
                          "that produced them diverged; use an earlier checkpoint or retrain with a lower learning rate")


def to_onnx(model: nn.Module, example_inputs, path: str | Path, *, verify: bool = True, opset: int = DEFAULT_OPSET,
            dynamic_batch: bool = True, dynamic_dims: Mapping[int, str] | None = None,
            input_names: Sequence[str] | None = None, atol: float = 1e-4, rtol: float = 1e-3,
            force: bool = False) -> Path:
    """Export ``model`` to ``path`` and (``verify``) check onnxruntime's outputs against torch's.

    ``example_inputs``: a tensor or a tuple of tensors (one per ``forward`` argument), named
    ``input_names`` in the graph (default ``input``, ``input1``, ...). ``dynamic_dims``: {dimension: name}
    left free in every input, e.g. ``{0: "batch", 1: "seq"}`` for a text encoder's ids and mask; default
    ``{0: "batch"}`` (``{}`` if not ``dynamic_batch``). ``opset``: MIN_OPSET..MAX_OPSET, the file gets
    exactly that one (ConfigError outside the range).

    Uses torch's torch.export-based exporter; where it cannot capture the model, falls back to the
    TorchScript exporter (opset <= 17) with a logged warning. Raises ExportError naming the failure, and
    names the tensors when the weights hold NaN/Inf. The check runs before the file is moved into place:
    an export that fails it leaves no file (and an existing one untouched). The exporter's per-node debug
    metadata (stack traces with local paths) is not written."""
    check_opset(opset)
    path = ensure_writable(path, force)
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    names = list(input_names) if input_names is not None else ["input"] + [f"input{i}" for i in range(1, len(args))]
    if len(names) != len(args):
        raise ExportError(f"input_names has {len(names)} names for {len(args)} example inputs")
    _refuse_nonfinite(model, f"cannot export {type(model).__name__} to {path}")
    dims = dict(dynamic_dims) if dynamic_dims is not None else ({0: "batch"} if dynamic_batch else {})
    was_training = model.training
    model.eval()
    try:
        def write(tmp: Path):
            try:
                export_graph(model, args, tmp, opset, dims, names, dynamo=True)
            except Exception as exc:  # the torch.export path rejects some Python control flow
                log.warning("torch.export-based ONNX export failed (%s); using the TorchScript exporter at opset %d",
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__, min(opset, 17))
                try:
                    export_graph(model, args, tmp, min(opset, 17), dims, names, dynamo=False)
                except Exception as exc2:
                    raise ExportError(f"cannot export {type(model).__name__} to ONNX: "
                                      f"{str(exc2).splitlines()[0] if str(exc2) else type(exc2).__name__}") from None
            _inline_external_data(tmp)
            import onnx

            model_proto = onnx.load(str(tmp))
            if _strip_debug_info(model_proto):
                onnx.save_model(model_proto, str(tmp))
            if verify:
                check_onnx(model, tmp, args, atol=atol, rtol=rtol, name=path)

        atomic_write(path, write)
    finally:
        model.train(was_training)
    return path


# Graph rewrites left off in every session we open. onnxruntime's CPU SkipLayerNormalization kernel (the fusion
# of a residual Add into the LayerNormalization after it) is much slower per call than the plain LayerNormalization
# kernel, so transformer encoders run faster (fp32 and int8) with the fusion off. Users running our files in their
# own onnxruntime session can pass the same list: InferenceSession(path, opts, disabled_optimizers=ORT_DISABLED_OPTIMIZERS).
ORT_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def ort_session(path: str | Path, threads: int = 1, optimized_path: str | Path | None = None):
    """An onnxruntime CPU session with fixed threads and all graph optimisations but ``ORT_DISABLED_OPTIMIZERS``.

    ``optimized_path``: also write the graph onnxruntime will run (after its fusions) there, to inspect it."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(ORT_DISABLED_OPTIMIZERS))
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0]}") from None


def run_onnx(session, *inputs: torch.Tensor) -> np.ndarray:
    feeds = {i.name: t.detach().cpu().numpy() for i, t in zip(session.get_inputs(), inputs)}
    return session.run(None, feeds)[0]


def check_onnx(model: nn.Module, path: str | Path, example_inputs, atol: float = 1e-4, rtol: float = 1e-3,
               name: str | Path | None = None) -> float:
    """Max abs difference between torch and onnxruntime on ``example_inputs``; raises ExportError beyond tolerance
    (naming the tensors when the model's weights hold NaN/Inf). ``name``: the file named in errors (default
    ``path``)."""
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    name = path if name is None else name
    with torch.no_grad():
        try:
            expected = model(*args)
        except RuntimeError as exc:
            raise ModelError(f"model forward failed on the example inputs: {str(exc).splitlines()[0]}") from None
    got = run_onnx(ort_session(path), *args)
    expected = expected.detach().numpy()
    if got.shape != expected.shape:
        raise ExportError(f"onnxruntime output shape {got.shape} != torch {expected.shape} for {name}")
    if not (np.isfinite(expected).all() and np.isfinite(got).all()):
        bad = nonfinite_tensors(model)
        where = f"the model holds NaN/Inf in {', '.join(bad[:3])}" if bad else "the example inputs overflow"
        raise ExportError(f"cannot check {name}: outputs hold NaN/Inf ({where}); use finite weights (an earlier "
                          "checkpoint, or retrain with a lower learning rate)")
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    if not np.allclose(got, expected, atol=atol, rtol=rtol):
        raise ExportError(f"onnxruntime disagrees with torch on {name}: max abs diff {diff:.3g} "
                          f"(atol {atol}, rtol {rtol})")
    return diff
