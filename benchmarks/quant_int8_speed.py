"""Issue 5 claim 4: real int8 speed in onnxruntime, 1 thread, batch 1 and 32.

ResNet-20 (Fashion-MNIST shape): our static QDQ int8 (u8 activations x s8 per-channel weights,
calibrated by our observer; on an AMX CPU the 64-channel convs' weights carry zero point -1, which puts them on
onnxruntime's AMX GEMM, see Int8Onnx.amx_conv_channels) vs onnxruntime fp32, torch fp32 eager, and onnxruntime's own
quantize_static (its defaults, and tuned to the same u8/s8 per-channel scheme).
MiniLM-shaped encoder (6 x 384, 12 heads, seq 128): our dynamic int8 (s8 per-channel weights) vs
torch fp32 eager, onnxruntime fp32, onnxruntime's quantize_dynamic with its defaults, torch.ao
quantize_dynamic (x86 and onednn engines) and bf16.

    python -m benchmarks.quant_int8_speed [--quick]
"""
from __future__ import annotations

import copy
import itertools
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import dataset, markdown_table, parser, start, trained_baseline, write_json
from benchmarks.minilm_shape import MiniLMShape
from netcompress.export import Int8Onnx, ort_session, quantize_onnx, to_onnx
from netcompress.measure import compare_latency, file_bytes, ort_callable, ratios
from netcompress.models import create_model
from netcompress.quantize import Float16, Percentile, quantize_

log = logging.getLogger("bench")


class _Reader:
    """onnxruntime CalibrationDataReader over a list of arrays."""

    def __init__(self, name, arrays):
        self.it = iter([{name: a} for a in arrays])

    def get_next(self):
        return next(self.it, None)



def shape_only_resnet20(splits):
    """ResNet-20 with random weights and BN statistics from real data: only the shape matters for latency."""
    torch.manual_seed(0)
    model = create_model("resnet20", in_channels=1, input_size=28)
    model.train()
    with torch.no_grad():
        for x, _ in list(torch.utils.data.DataLoader(splits.train, batch_size=256))[:8]:
            model(x)
    return model.eval()


def calibration_batches(splits, n: int = 16, batch_size: int = 32) -> list:
    return [x for x, _ in torch.utils.data.DataLoader(splits.train, batch_size=batch_size)][:n]

def _ort_own_static(fp32: Path, out: Path, calib: list[np.ndarray], tuned: bool) -> Path:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre))
    kw = dict(per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8) if tuned else {}
    quantize_static(str(pre), str(out), _Reader("input", calib), quant_format=QuantFormat.QDQ, **kw)
    return out


def _ort_own_dynamic(fp32: Path, out: Path) -> Path:
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(fp32), str(out))  # its defaults
    return out


def _default_session(path: Path):
    """onnxruntime's default CPU session (all its fusions), 1 thread: what a user of its quantizer alone gets."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _onnx_mib(path: Path) -> float:
    """The graph plus any external-data file beside it."""
    extra = [p for p in Path(path).parent.glob(Path(path).name + "*") if p != Path(path)]
    return (file_bytes(path) + sum(file_bytes(p) for p in extra)) / 2 ** 20


def _max_diff(fn, ref, x):
    with torch.inference_mode():
        y = fn(x)
    y = y[0] if isinstance(y, (list, tuple)) else y
    y = torch.as_tensor(np.asarray(y, dtype=np.float32)) if not isinstance(y, torch.Tensor) else y.float()
    return float((y - ref).abs().max())


def _time(cands: dict, inputs, repeats: int, ref_name: str, warm_calls: int = 0):
    stats = compare_latency(cands, inputs, warmup=3, repeats=repeats, threads=1, warm_calls=warm_calls)
    r = ratios(stats, ref_name)
    return stats, r


def _gap_graph(fp32: Path, out: Path) -> Path:
    """The fp32 graph with the spatial ReduceMean as GlobalAveragePool (what quantize_onnx quantizes)."""
    import onnx

    from netcompress.export.quantized import spatial_means_to_gap

    g = onnx.load(str(fp32))
    spatial_means_to_gap(g)
    onnx.save(g, str(out))
    return out


def resnet(tmp: Path, batches=(1, 32), repeats=30, trained=True):
    splits = dataset()
    if trained:  # the shared full-data baseline (6 epochs, 55k images)
        model, metrics = trained_baseline("resnet20", splits)
        log.warning("resnet20 baseline test accuracy %.4f", metrics["accuracy"])
    else:
        model = shape_only_resnet20(splits)
    model.eval()
    calib = calibration_batches(splits)
    fp32 = to_onnx(model, calib[0][:2], tmp / "r20.onnx")
    fp32_gap = _gap_graph(fp32, tmp / "r20_gap.onnx")
    ours = quantize_onnx(fp32, tmp / "r20_ours.onnx", Int8Onnx(observer=Percentile(99.999)), data=calib)
    ours_fp32_stem = quantize_onnx(fp32, tmp / "r20_ours_stem.onnx",
                                   Int8Onnx(observer=Percentile(99.999), fp32_narrow_convs=True), data=calib)
    np_calib = [c.numpy() for c in calib]
    own_default = _ort_own_static(fp32, tmp / "r20_ort_default.onnx", np_calib, tuned=False)
    own_tuned = _ort_own_static(fp32, tmp / "r20_ort_tuned.onnx", np_calib, tuned=True)
    own_tuned_gap = _ort_own_static(fp32_gap, tmp / "r20_ort_tuned_gap.onnx", np_calib, tuned=True)
    # the reference "onnxruntime fp32" is the graph we quantize (pooling as GlobalAveragePool), so the
    # int8 ratio is not flattered by a slower fp32 graph; the export as-is is timed beside it
    sessions = {"onnxruntime fp32": fp32_gap, "onnxruntime fp32 (export as-is, ReduceMean)": fp32,
                "ours int8 static u8s8 per-ch": ours, "ours int8, first conv left fp32 (option)": ours_fp32_stem,
                "onnxruntime quantize_static (defaults)": own_default,
                "onnxruntime quantize_static (u8s8 per-ch)": own_tuned,
                "onnxruntime quantize_static (u8s8 per-ch, on our GAP graph)": own_tuned_gap}
    rows = []
    # warm: each timed call right after an untimed call of the same candidate (a model serving requests
    # back to back); cold: right after another candidate (random order), whose weights may have evicted its own
    for b, (timing, warm_calls) in itertools.product(batches, (("warm", 1), ("cold", 0))):
        x = splits.test.tensors[0][:b].contiguous()
        with torch.no_grad():
            ref = model(x)
        cands = {"torch fp32 eager": model}
        cands.update({k: ort_callable(ort_session(p, threads=1)) for k, p in sessions.items()})
        stats, r = _time(cands, x, repeats, "onnxruntime fp32", warm_calls)
        r_torch = ratios(stats, "torch fp32 eager")
        for k, s in stats.items():
            rows.append({"model": "resnet20", "batch": b, "timing": timing, "variant": k, "median_ms": s.median_ms,
                         "p10_ms": s.p10_ms, "p90_ms": s.p90_ms,
                         "vs_ort_fp32": r[k], "vs_torch_fp32": r_torch[k],
                         "file_MiB": _onnx_mib(sessions[k]) if k in sessions else float("nan"),
                         "max_abs_diff": _max_diff(cands[k], ref, x)})
    return rows


def minilm(tmp: Path, batches=(1, 32), repeats=20, seq=128, repeats_b32=None):
    torch.manual_seed(0)
    model = MiniLMShape().eval()
    ids = torch.randint(0, 30522, (2, seq))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp32 = to_onnx(model, ids, tmp / "minilm.onnx", atol=1e-3)
    ours = quantize_onnx(fp32, tmp / "minilm_ours.onnx", Int8Onnx(static=False))
    ours_am = quantize_onnx(fp32, tmp / "minilm_ours_am.onnx", Int8Onnx(static=False, activation_matmuls=True))
    own = _ort_own_dynamic(fp32, tmp / "minilm_ort_default.onnx")
    ao = {}
    for engine in ("x86", "onednn"):
        torch.backends.quantized.engine = engine
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ao[engine] = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear},
                                                                dtype=torch.qint8)
    bf16 = copy.deepcopy(model)
    quantize_(bf16, Float16(torch.bfloat16))
    # ours run in our session (ort_session: residual LayerNorm left unfused); onnxruntime's quantizer output both in
    # its own default session and in ours, so graph and runtime setting are separated
    sessions = {"onnxruntime fp32": fp32, "ours int8 dynamic s8 per-ch": ours,
                "ours int8 dynamic + activation matmuls": ours_am,
                "onnxruntime quantize_dynamic (defaults), our session": own}
    default_sessions = {"onnxruntime fp32, default session": fp32,
                        "onnxruntime quantize_dynamic (defaults), default session": own}
    rows = []
    for b in batches:
        x = torch.randint(0, 30522, (b, seq))
        with torch.no_grad():
            ref = model(x)
        cands = {"torch fp32 eager": model}
        cands.update({k: ort_callable(ort_session(p, threads=1)) for k, p in sessions.items()})
        cands.update({k: ort_callable(_default_session(p)) for k, p in default_sessions.items()})

        def run_ao(engine):
            def f(t):
                torch.backends.quantized.engine = engine
                return ao[engine](t)
            return f

        cands["torch.ao quantize_dynamic (x86)"] = run_ao("x86")
        cands["torch.ao quantize_dynamic (onednn)"] = run_ao("onednn")
        cands["torch bf16"] = bf16
        stats, r = _time(cands, x, repeats if b == 1 or not repeats_b32 else repeats_b32, "torch fp32 eager")
        r_ort = ratios(stats, "onnxruntime fp32")
        r_own = ratios(stats, "onnxruntime quantize_dynamic (defaults), default session")
        for k, s in stats.items():
            rows.append({"model": "minilm-shape", "batch": b, "timing": "cold", "variant": k,
                         "median_ms": s.median_ms, "p10_ms": s.p10_ms, "p90_ms": s.p90_ms,
                         "vs_torch_fp32": r[k], "vs_ort_fp32": r_ort[k], "vs_ort_quantizer": r_own[k],
                         "file_MiB": _onnx_mib({**sessions, **default_sessions}[k])
                         if k in {**sessions, **default_sessions} else float("nan"),
                         "max_abs_diff": _max_diff(cands[k], ref, x)})
    return rows


def main():
    ap = parser(__doc__, quick=False)
    ap.add_argument("--only", choices=("resnet", "minilm"), default=None)
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per candidate (overrides --quick)")
    ap.add_argument("--repeats-b32", type=int, default=None, help="MiniLM batch-32 repeats (it is slow)")
    ap.add_argument("--random-weights", action="store_true", help="ResNet-20 with random weights (no baseline)")
    args = start(ap)
    load = os.getloadavg()
    t0 = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.only in (None, "resnet"):
            rows += resnet(tmp, repeats=args.repeats or (10 if args.quick else 300), trained=not args.random_weights)
        if args.only in (None, "minilm"):
            rows += minilm(tmp, repeats=args.repeats or (5 if args.quick else 20), repeats_b32=args.repeats_b32)
    cols = ["model", "batch", "timing", "variant", "median_ms", "vs_torch_fp32", "vs_ort_fp32", "vs_ort_quantizer",
            "file_MiB", "max_abs_diff"]
    print(markdown_table(rows, cols))
    print(f"load average before: {load}, after: {os.getloadavg()}, wall {time.time() - t0:.0f}s")
    write_json("quant_int8_speed" + (f"_{args.only}" if args.only else ""),
               {"rows": rows, "loadavg_before": load, "loadavg_after": os.getloadavg(), "threads": 1})


if __name__ == "__main__":
    main()
