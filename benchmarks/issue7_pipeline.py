"""Issue 7, claim 2: "structured prune + KD + int8" on ResNet-20 / Fashion-MNIST, through the user path.

The measurement is the CLI itself (`netcompress compress`); this script only brings the shared dense
baseline to it and summarises the run directory against the claim's targets:

    python -m benchmarks.issue7_pipeline baseline benchmarks/out/resnet20-dense.safetensors
    netcompress compress recipes/structured_kd_int8.yaml --out benchmarks/out/issue7-run \\
        --weights benchmarks/out/resnet20-dense.safetensors
    python -m benchmarks.issue7_pipeline summary benchmarks/out/issue7-run

``baseline`` writes trained_baseline("resnet20") (the shared dense baseline of every benchmark) as a plain
weights file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from benchmarks.common import dataset, machine, markdown_table, parser, trained_baseline, write_json
from netcompress.core.io import save_weights

TARGETS = {"accuracy_drop_points": "<= 1", "speedup_same_runtime_onnx_x": ">= 3 at b1 and b32", "size_x": ">= 10"}


def export_baseline(out: str) -> None:
    model, test = trained_baseline("resnet20", dataset())
    path = save_weights(model, out, force=True)
    print(f"dense ResNet-20 (trained_baseline): test {test} -> {path}")


def summary(run: str) -> dict:
    run_dir = Path(run)
    m = json.loads((run_dir / "metrics.json").read_text())
    b, f, r, lat = m["baseline"], m["final"], m["ratios"], m["latency_ms"]
    rows = [{"model": "dense fp32 (safetensors; torch eager / onnxruntime fp32)", "accuracy": b["accuracy"],
             "params": b["params"], "MACs": b["macs"], "bytes": b["bytes_on_disk"],
             **{f"torch ms {k}": v["baseline_torch"] for k, v in lat.items()},
             **{f"ort ms {k}": v["baseline_onnx"] for k, v in lat.items()}},
            {"model": f"final ({f['format']}, {f['runtime']})", "accuracy": f["accuracy"], "params": f["params"],
             "MACs": f["macs"], "bytes": f["bytes_on_disk"],
             **{f"torch ms {k}": "" for k in lat},
             **{f"ort ms {k}": v["final_onnx"] for k, v in lat.items()}}]
    print(markdown_table(rows))
    same = r.get("speedup_same_runtime_onnx_x", {})
    verdict = {"accuracy_drop_points": r["accuracy_drop_points"] <= 1.0,
               "speedup_same_runtime_onnx_x": bool(same) and all(v >= 3.0 for v in same.values()),
               "size_x": r["size_x"] >= 10.0}
    out = {"accuracy_drop_points": r["accuracy_drop_points"], "size_x": r["size_x"],
           "speedup_same_runtime_onnx_x": same, "speedup_vs_torch_eager_x": r["speedup_vs_torch_eager_x"],
           "targets": TARGETS, "met": verdict, "n_test": m["n_test"],
           "files": {"dense": "checkpoints/baseline.safetensors", "final": m["artifacts"].get(f["format"])},
           "stages": m["stages"], "latency_note": m["latency_note"]}
    print(json.dumps({k: out[k] for k in ("accuracy_drop_points", "size_x", "speedup_same_runtime_onnx_x",
                                           "speedup_vs_torch_eager_x", "met", "files")}, indent=1))
    print(f"load average now: {os.getloadavg()}")
    write_json("issue7_pipeline", {"run_dir": str(run_dir), "summary": out, "load_avg_at_summary": os.getloadavg(),
                                   "machine_at_summary": machine()})
    return out


def main(argv=None) -> None:
    ap = parser(__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("baseline", help="write the shared dense ResNet-20 as a weights file")
    p.add_argument("out")
    p = sub.add_parser("summary", help="the claim's figures from a finished run directory")
    p.add_argument("run")
    args = ap.parse_args(argv)
    if args.cmd == "baseline":
        export_baseline(args.out)
    else:
        summary(args.run)


if __name__ == "__main__":
    main()
