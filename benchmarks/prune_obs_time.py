"""Claim 5: one-shot OBS/WoodFisher pruning of LeNet-300-100 finishes in under a minute on this CPU.

Times ``prune_`` with OBS (global, 90%) on the cached trained baseline: wall time and process CPU time
(1 thread; on a shared, loaded machine the CPU time is what a dedicated core would take), for a few
recomputation-step counts and both inverse builders (Cholesky of the accumulated blocks, Woodbury).

    python -m benchmarks.prune_obs_time
"""
from __future__ import annotations

import copy
import os
import time

from benchmarks.common import dataset, machine, markdown_table, parser, start, trained_baseline, write_json
from netcompress.measure import accuracy
from netcompress.prune import OBS, Global, Unstructured, prune_

SETTINGS = [dict(steps=1), dict(steps=4), dict(steps=8), dict(steps=4, woodbury=True)]


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--only-steps", type=int, help="time only the Cholesky setting with this many steps")
    args = start(ap)
    settings = [dict(steps=args.only_steps)] if args.only_steps else SETTINGS
    splits = dataset("fashion_mnist")
    base, _ = trained_baseline("lenet_300_100", splits)
    calib = (splits.train.tensors[0][:1024], splits.train.tensors[1][:1024])
    rows = []
    for kw in settings:
        crit = OBS(samples=1024, block_size=64, damping=1e-3, **kw)
        model = copy.deepcopy(base)
        load = os.getloadavg()[0]
        w0, c0 = time.perf_counter(), time.process_time()
        prune_(model, Unstructured(sparsity=0.9, criterion=crit, scope=Global()), data=calib)
        rows.append({"steps": crit.steps, "inverse": "woodbury" if crit.woodbury else "cholesky",
                     "wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0,
                     "loadavg_1min": load, "test_acc": 100 * accuracy(model, splits.test)})
        print(rows[-1], flush=True)
    print(markdown_table(rows))
    write_json("prune_obs_time" + (f"_steps{args.only_steps}" if args.only_steps else ""), {"rows": rows, "machine": machine()})


if __name__ == "__main__":
    main()
