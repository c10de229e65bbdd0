"""Claim: a sparse (torch CSR) Linear beats the dense one above a break-even sparsity on this CPU.

Sweeps sparsity for two Linear shapes at batch 1 and 64, dense vs ``SparseLinear`` interleaved, medians,
1 thread, and reports the measured break-even (linear interpolation of the speed-up crossing 1.0). Also
times the whole LeNet-300-100 at 95% global sparsity, dense vs its sparse-executed copy.

    python -m benchmarks.prune_sparse_exec [--repeats 60]
"""
from __future__ import annotations

import os

import torch
from torch import nn

from benchmarks.common import machine, markdown_table, parser, start, write_json
from netcompress.measure import compare_latency, ratios
from netcompress.models import create_model
from netcompress.prune import Global, Unstructured, bake_, prune_
from netcompress.prune.sparse import SparseLinear, sparsify_linears_

LEVELS = (0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99)
SHAPES = ((300, 784), (1024, 1024))


def _break_even(points: list[tuple[float, float]]) -> float | None:
    """First sparsity where the speed-up crosses 1, interpolated; None if never."""
    for (s0, r0), (s1, r1) in zip(points, points[1:]):
        if r0 < 1 <= r1:
            return s0 + (1 - r0) * (s1 - s0) / (r1 - r0)
    return points[0][0] if points and points[0][1] >= 1 else None


def main() -> None:
    args = start(parser(__doc__, repeats=60))
    torch.manual_seed(0)
    rows, summary = [], []
    for out_f, in_f in SHAPES:
        for batch in (1, 64):
            x = torch.randn(batch, in_f)
            pts = []
            for s in LEVELS:
                lin = nn.Linear(in_f, out_f)
                with torch.no_grad():
                    lin.weight.mul_(torch.rand_like(lin.weight) >= s)
                stats = compare_latency({"dense": lin, "sparse": SparseLinear.from_dense(lin)}, x,
                                        warmup=10, repeats=args.repeats, threads=1)
                r = ratios(stats, "dense")["sparse"]
                pts.append((s, r))
                rows.append({"shape": f"{out_f}x{in_f}", "batch": batch, "sparsity": s,
                             "dense_ms": stats["dense"].median_ms, "sparse_ms": stats["sparse"].median_ms,
                             "speedup": r})
            be = _break_even(pts)
            summary.append({"shape": f"{out_f}x{in_f}", "batch": batch,
                            "break_even_sparsity": "never (<= 0.99)" if be is None else round(be, 3)})
    # whole model: LeNet-300-100 at 95% global magnitude sparsity
    model_rows = []
    for batch in (1, 64):
        dense = create_model("lenet_300_100")
        prune_(dense, Unstructured(sparsity=0.95, scope=Global()))
        bake_(dense)
        sparse = create_model("lenet_300_100")
        sparse.load_state_dict(dense.state_dict())
        replaced = sparsify_linears_(sparse, min_sparsity=0.0)
        x = torch.randn(batch, 1, 28, 28)
        assert torch.allclose(dense(x), sparse(x), atol=1e-4)
        stats = compare_latency({"dense": dense, "sparse": sparse}, x, warmup=10, repeats=args.repeats)
        model_rows.append({"model": "lenet_300_100 @95% global", "batch": batch, "layers": len(replaced),
                           "dense_ms": stats["dense"].median_ms, "sparse_ms": stats["sparse"].median_ms,
                           "speedup": ratios(stats, "dense")["sparse"]})
    print(markdown_table(summary))
    print()
    print(markdown_table(model_rows))
    print()
    print(markdown_table(rows))
    load = os.getloadavg()
    write_json("prune_sparse_exec", {"summary": summary, "model": model_rows, "sweep": rows,
                                     "loadavg": load, "machine": machine()})


if __name__ == "__main__":
    main()
