"""Re-measure the latency of a pruned model from a structured_prune JSON: its replayable plan is applied to
the cached dense baseline and timed against it (torch eager + onnxruntime, batch 32 and 1, 1 thread,
interleaved medians), ``--runs`` times in a row. For a quiet-machine figure beside one taken next to a job.

    python -m benchmarks.structured_remeasure benchmarks/records/2026-12-04/structured_prune_vgg_small_n0_kd_s3.json
"""
from __future__ import annotations

import copy
import json
import os

from benchmarks.common import costs, dataset, latency_rows, machine, markdown_table, parser, start, trained_baseline, write_json
from netcompress.graph.plan import PrunePlan


def main():
    p = parser(__doc__, repeats=50, threads=1)
    p.add_argument("json", help="a structured_prune JSON (its models' 'plan' is replayed)")
    p.add_argument("--runs", type=int, default=3)
    a = start(p)
    with open(a.json) as f:
        source = json.load(f)
    splits = dataset()
    rows = []
    for name, entry in source["models"].items():
        dense, _ = trained_baseline(name, splits)
        pruned = PrunePlan.from_dict(entry["plan"]).apply(copy.deepcopy(dense).eval())
        x1 = splits.train[0][0][None]
        ratio = costs(dense, x1)["macs"] / costs(pruned, x1)["macs"]
        for run in range(a.runs):
            lat = latency_rows({"dense": dense.eval(), "ours": pruned}, splits.input_shape, a.repeats, a.threads)
            row = {"model": name, "run": run + 1, "MAC ratio": ratio, "load (1 min)": os.getloadavg()[0]}
            for b in ("eager_b32", "ort_b32", "eager_b1", "ort_b1"):
                row[f"{b} speedup"] = lat["ours"][f"{b}_speedup"]
            row["eager_b32 / MAC ratio"] = row["eager_b32 speedup"] / ratio
            row["ort_b32 / MAC ratio"] = row["ort_b32 speedup"] / ratio
            rows.append(row)
            print(markdown_table([row]), flush=True)
    print(f"\nmachine: {machine()}\n")
    print(markdown_table(rows))
    stem = os.path.splitext(os.path.basename(a.json))[0]
    write_json(f"structured_remeasure_{stem}", {"args": vars(a), "rows": rows})


if __name__ == "__main__":
    main()
