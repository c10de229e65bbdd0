"""Issue 5 claim 4 on the AMX Xeon: which int8 settings change ResNet-20's int8 kernel time in onnxruntime.

Each lever alone, against the same onnxruntime fp32 graph (GlobalAveragePool form, ORT_ENABLE_ALL, NCHWc):
activation/weight types (u8s8, s8s8, u8u8), per-tensor vs per-channel weights, QOperator vs QDQ, the first conv
left in fp32, the conv weight zero point that picks onnxruntime's kernel (0: its AVX-512 VNNI symmetric conv;
-1: im2col + its QGEMM, AMX here), graph optimization level (EXTENDED = no NHWC layout transform) and
``session.qdqisint8allowed``. Per lever: the optimized graph's node counts, onnxruntime's profiler (kernel time
per op type, and per conv stage), interleaved medians (warm, 1 thread) and test accuracy on Fashion-MNIST.

    OMP_NUM_THREADS=1 python -m benchmarks.quant_int8_levers [--repeats 300]
"""
from __future__ import annotations

import collections
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from benchmarks.common import dataset, markdown_table, parser, start, trained_baseline, write_json
from benchmarks.quant_int8_graphs import _profile, _session
from benchmarks.quant_int8_speed import _gap_graph, calibration_batches
from netcompress.export import Int8Onnx, quantize_onnx, to_onnx
from netcompress.measure import compare_latency, ort_callable, ratios
from netcompress.quantize import Percentile

log = logging.getLogger("bench")


def _stage(e) -> str | None:
    """Conv kernels keyed by output channels: NCHW / NCHWc outputs have H == W in dims 2, 3 (square maps here),
    NHWC ones (int8 after the layout transform) in dims 1, 2."""
    if "Conv" not in e["args"]["op_name"]:
        return None
    dims = list(e["args"]["output_type_shape"][0].values())[0]
    return f"conv {dims[1] if dims[2] == dims[3] else dims[3]} ch"


OBS = Percentile(99.999)
# name: (Int8Onnx, session kwargs); None = the fp32 graph
LEVERS = {
    "fp32": (None, {}),
    "fp32, ORT_ENABLE_EXTENDED": (None, {"level": "EXTENDED"}),
    "int8 default now (u8s8 per-ch, zp -1 at >= 64 ch)": (Int8Onnx(observer=OBS, amx_conv_channels=64), {}),
    "u8s8 per-ch, zp 0 everywhere (before)": (Int8Onnx(observer=OBS, amx_conv_channels=None), {}),
    "u8s8 per-ch, zp -1 at >= 32 ch": (Int8Onnx(observer=OBS, amx_conv_channels=32), {}),
    "u8s8 per-ch, zp -1 on every conv": (Int8Onnx(observer=OBS, amx_conv_channels=1), {}),
    "u8s8 per-tensor": (Int8Onnx(observer=OBS, per_channel=False, amx_conv_channels=None), {}),
    "u8s8 per-ch, QOperator": (Int8Onnx(observer=OBS, amx_conv_channels=None, quant_format="QOperator"), {}),
    "u8s8 per-ch, first conv fp32": (Int8Onnx(observer=OBS, amx_conv_channels=64, fp32_narrow_convs=True), {}),
    "u8 weights (u8u8) per-tensor": (Int8Onnx(observer=OBS, weight_type="u8", per_channel=False), {}),
    "s8s8 per-ch": (Int8Onnx(observer=OBS, activation_type="s8", amx_conv_channels=None), {}),
    "s8s8 per-ch, qdqisint8allowed=1": (Int8Onnx(observer=OBS, activation_type="s8", amx_conv_channels=None),
                                        {"config": {"session.qdqisint8allowed": "1"}}),
    "u8s8 per-ch, ORT_ENABLE_EXTENDED": (Int8Onnx(observer=OBS, amx_conv_channels=None), {"level": "EXTENDED"}),
}


def main():
    ap = parser(__doc__, repeats=300)
    args = start(ap)
    load, t0 = os.getloadavg(), time.time()
    splits = dataset()
    model, metrics = trained_baseline("resnet20", splits)
    model.eval()
    calib = calibration_batches(splits)
    X, Y = splits.test.tensors
    with torch.no_grad():
        ref = torch.cat([model(x) for x in X.split(500)]).numpy()
    rows = {k: {"lever": k} for k in LEVERS}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32 = _gap_graph(to_onnx(model, calib[0][:2], tmp / "raw.onnx"), tmp / "fp32.onnx")
        paths = {}
        for i, (name, (cfg, skw)) in enumerate(LEVERS.items()):
            if cfg is None:
                paths[name] = fp32
            else:
                paths[name] = quantize_onnx(fp32, tmp / f"v{i}.onnx", cfg, data=calib)
            opt = tmp / f"v{i}.opt.onnx"
            _session(paths[name], optimized=opt, **skw)
            ops = collections.Counter(n.op_type for n in onnx.load(str(opt)).graph.node)
            rows[name]["nodes"] = ", ".join(f"{v} {k}" for k, v in sorted(ops.items(), key=lambda kv: -kv[1]))
            s = _session(paths[name], **skw)
            out = np.concatenate([s.run(None, {"input": x.numpy()})[0] for x in X.split(500)])
            rows[name]["test_acc"] = float((out.argmax(1) == Y.numpy()).mean())
            rows[name]["max_abs_diff"] = float(np.abs(out - ref).max())
            for b, runs in ((1, 300), (32, 30)):
                x = X[:b].numpy()
                prof = _profile(paths[name], x, runs, **skw)
                rows[name][f"b{b}_profile_us"] = {k: round(v, 1) for k, v in prof.items()}
                rows[name][f"b{b}_stages_us"] = {k: round(v, 1) for k, v in
                                                 sorted(_profile(paths[name], x, runs, by=_stage, **skw).items())}
        for b, reps in ((1, args.repeats), (32, max(3, args.repeats // 10))):
            x = X[:b].contiguous()
            cands = {k: ort_callable(_session(paths[k], **LEVERS[k][1])) for k in LEVERS}
            stats = compare_latency(cands, x, warmup=3, repeats=reps, threads=1, warm_calls=1)
            r = ratios(stats, "fp32")
            for k, st in stats.items():
                rows[k][f"b{b}_ms"], rows[k][f"b{b}_vs_fp32"] = st.median_ms, r[k]
    table = list(rows.values())
    for row in table:
        for b in (1, 32):
            p = row[f"b{b}_profile_us"]
            row[f"b{b}_conv_us"] = sum(v for k, v in p.items() if "Conv" in k)
    print(markdown_table(table, ["lever", "b1_ms", "b1_vs_fp32", "b32_ms", "b32_vs_fp32", "b1_conv_us", "b32_conv_us",
                                 "test_acc", "max_abs_diff"]))
    for row in table:
        print(f"\n{row['lever']}: {row['nodes']}")
        for b in (1, 32):
            print(f"  b{b} profile us/run: {row[f'b{b}_profile_us']}\n  b{b} conv stages: {row[f'b{b}_stages_us']}")
    print(f"baseline test accuracy {metrics['accuracy']:.4f}; load average before: {load}, after: {os.getloadavg()}, "
          f"wall {time.time() - t0:.0f}s")
    write_json("quant_int8_levers", {"rows": table, "loadavg_before": load, "loadavg_after": os.getloadavg(),
                                     "threads": 1})


if __name__ == "__main__":
    main()
