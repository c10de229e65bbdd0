"""Issue 5 claim 4, diagnosis: our int8 ResNet-20 graph vs onnxruntime's own quantizer, node by node.

Dumps each graph as onnxruntime runs it (SessionOptions.optimized_model_filepath, all optimizations)
and counts its nodes; profiles kernel time per op type (SessionOptions.enable_profiling); then times
the graphs interleaved in three orders: the former A B C / C B A alternation (the first and last
candidates run twice in a row at the round boundaries), the same with the list reversed, and
compare_latency's current seeded random rounds. Three sessions of one file give the noise floor.

    python -m benchmarks.quant_int8_graphs [--repeats 300]
"""
from __future__ import annotations

import collections
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import onnx
import onnxruntime as ort

from benchmarks.common import dataset, parser, start, write_json
from benchmarks.quant_int8_speed import _gap_graph, _ort_own_static, calibration_batches, shape_only_resnet20
from netcompress.export import ORT_DISABLED_OPTIMIZERS, Int8Onnx, quantize_onnx, to_onnx
from netcompress.measure import compare_latency, ort_callable
from netcompress.quantize import Percentile


def _session(path: Path, optimized: Path | None = None, profile: Path | None = None, level: str = "ALL",
             config: dict | None = None):
    """1 thread, our disabled optimizers; ``level`` names a GraphOptimizationLevel (ORT_ENABLE_<level>) and
    ``config`` holds session config entries (e.g. {"session.qdqisint8allowed": "1"})."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{level}")
    so.log_severity_level = 3
    for k, v in (config or {}).items():
        so.add_session_config_entry(k, v)
    if optimized:
        so.optimized_model_filepath = str(optimized)
    if profile:
        so.enable_profiling, so.profile_file_prefix = True, str(profile)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(ORT_DISABLED_OPTIMIZERS))


def _profile(path: Path, x, runs: int = 100, by=None, **session_kw) -> dict:
    """Mean microseconds per run: the whole run and the kernels of each op type (or of each ``by(event)`` key)."""
    s = _session(path, profile=path.with_suffix(""), **session_kw)
    for _ in range(20):
        s.run(None, {"input": x})
    for _ in range(runs):
        s.run(None, {"input": x})
    events = json.loads(Path(s.end_profiling()).read_text())
    per, total = collections.Counter(), 0.0
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            key = by(e) if by else e["args"]["op_name"]
            if key is not None:  # by() returns None for kernels it leaves out
                per[key] += e["dur"]
        if e.get("cat") == "Session" and e["name"] == "model_run":
            total += e["dur"]
    # the warm-up runs are profiled too
    return {"model_run": total / (runs + 20), **{k: v / (runs + 20) for k, v in per.most_common()}}


def _old_alternation(cands: dict, x, repeats: int) -> dict:
    """The former compare_latency order: A B C, C B A, A B C, ..."""
    calls = {k: (lambda f=f: f(x)) for k, f in cands.items()}
    for c in calls.values():
        for _ in range(5):
            c()
    samples, order = {k: [] for k in calls}, list(calls)
    for i in range(repeats):
        for k in (order if i % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            calls[k]()
            samples[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in samples.items()}


def main():
    ap = parser(__doc__, repeats=300)
    args = start(ap)
    splits = dataset()
    model = shape_only_resnet20(splits)  # only the structure matters here
    calib = calibration_batches(splits)
    out = {"graphs": {}, "profile": {}, "timing": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        g = {"fp32": to_onnx(model, calib[0][:2], tmp / "fp32.onnx")}
        g["fp32 GAP"] = _gap_graph(g["fp32"], tmp / "fp32_gap.onnx")
        g["ours int8"] = quantize_onnx(g["fp32"], tmp / "ours.onnx", Int8Onnx(observer=Percentile(99.999)),
                                       data=calib)
        np_calib = [c.numpy() for c in calib]
        g["ort tuned"] = _ort_own_static(g["fp32"], tmp / "tuned.onnx", np_calib, tuned=True)
        g["ort defaults"] = _ort_own_static(g["fp32"], tmp / "default.onnx", np_calib, tuned=False)
        for name, p in g.items():
            opt = p.with_suffix(".opt.onnx")
            _session(p, optimized=opt)
            ops = dict(collections.Counter(n.op_type for n in onnx.load(str(opt)).graph.node))
            out["graphs"][name] = ops
            print(f"{name}: {ops}")
        for b in (1, 32):
            x = splits.test.tensors[0][:b].numpy()
            for name, p in g.items():
                prof = _profile(p, x)
                out["profile"][f"b{b} {name}"] = prof
                print(f"b{b} {name}: " + ", ".join(f"{k} {v:.0f}us" for k, v in prof.items()))

        def timed(names, how, b=1, repeats=args.repeats):
            x = splits.test.tensors[0][:b].contiguous()
            cands = {n: ort_callable(_session(g[n.split("#")[0]])) for n in names}
            if how == "old":
                med = _old_alternation(cands, x, repeats)
            else:
                med = {k: s.median_ms for k, s in compare_latency(cands, x, warmup=5, repeats=repeats,
                                                                  warm_calls=int(how == "warm")).items()}
            out["timing"].append({"batch": b, "order": how, "repeats": repeats, "load": os.getloadavg()[0],
                                  "median_ms": med})
            print(f"b{b} {how:5s} x{repeats}: " + " | ".join(f"{k} {v:.3f}" for k, v in med.items()), flush=True)

        five = ["fp32#first", "fp32", "ours int8", "ort defaults", "ort tuned"]
        timed(five, "old")
        timed(["fp32#first", "fp32", "ort tuned", "ort defaults", "ours int8"], "old")
        timed(five, "cold")
        timed(five, "warm")
        timed(["ours int8#1", "ours int8#2", "ours int8#3"], "old")
        timed(["ours int8#1", "ours int8#2", "ours int8#3"], "cold")
        timed(["ours int8", "ort tuned"], "warm", repeats=2 * args.repeats)
        timed(["ours int8", "ort tuned"], "warm", b=32, repeats=args.repeats)
    write_json("quant_int8_graphs", out)


if __name__ == "__main__":
    main()
