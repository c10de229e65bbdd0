"""Claim 4 of issue 4: ask for a 2x measured speedup (batch 32, 1 thread, torch eager) and get 1.8x-2.2x,
measured again independently after the search; the table's prediction is reported beside it.

    python -m benchmarks.structured_latency --models resnet56 vgg_small --n-train 6000 --ft-epochs 0
"""
from __future__ import annotations

import copy
import time

import torch

from benchmarks.common import (costs, dataset, fine_tune, latency_rows, machine, markdown_table, parser, start, subset,
                               trained_baseline, write_json)
from netcompress.prune.structured import L2, ChannelPruning, Latency, prune_channels


def main():
    a = start(parser(__doc__, models=["resnet56", "vgg_small"], n_train=6000, n_test=0, ft_epochs=3, repeats=20,
                     threads=1))
    splits = subset(dataset(), a.n_train, a.n_test)
    shape = splits.input_shape
    x1 = torch.randn(1, *shape)
    rows, payload = [], {"args": vars(a), "models": {}}
    for name in a.models:
        t0 = time.time()
        dense, dense_test = trained_baseline(name, splits)
        dense.eval()
        pruned = copy.deepcopy(dense)
        r = prune_channels(pruned, ChannelPruning(budget=Latency(2.0, batch_size=32, threads=a.threads, rounds=4,
                                                                 repeats=a.repeats), importance=L2(), round_to=8),
                           torch.randn(2, *shape))
        test = fine_tune(pruned, splits, a.ft_epochs)
        lat = latency_rows({"dense": dense, "pruned": pruned}, shape, a.repeats, a.threads)
        c, d = costs(pruned, x1), costs(dense, x1)
        row = {"model": name, "asked": "2.00x", "predicted (table)": r.latency["predicted_speedup"],
               "measured in search": r.latency["measured_speedup"],
               "re-measured eager b32": lat["pruned"]["eager_b32_speedup"],
               "ort b32": lat["pruned"]["ort_b32_speedup"], "eager b1": lat["pruned"]["eager_b1_speedup"],
               "ort b1": lat["pruned"]["ort_b1_speedup"], "MAC ratio": d["macs"] / c["macs"],
               "search rounds": r.latency["rounds"], "acc dense": f"{dense_test['accuracy'] * 100:.2f}",
               f"acc pruned (+{a.ft_epochs} ep FT)": f"{test['accuracy'] * 100:.2f}"}
        rows.append(row)
        payload["models"][name] = {"row": row, "search": r.latency, "latency": lat, "plan": r.plan.to_dict(),
                                   "seconds": time.time() - t0}
        print(markdown_table([row]), flush=True)
    payload["rows"] = rows
    print(f"\nmachine: {machine()}\n")
    print(markdown_table(rows))
    write_json("structured_latency_" + "_".join(a.models), payload)


if __name__ == "__main__":
    main()
