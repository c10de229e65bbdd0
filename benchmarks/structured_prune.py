"""Claims 2 + 3 of issue 4: 2x fewer MACs by physical channel removal, fine-tuned briefly, on ResNet-56 and
VGG-small / Fashion-MNIST; accuracy drop, measured latency (torch eager + onnxruntime, batch 32 and 1,
1 thread) against the MAC ratio; side by side with Torch-Pruning (same model, MAC ratio, round_to,
fine-tune budget) in the same run.

    python -m benchmarks.structured_prune --models resnet56 vgg_small --n-train 6000 --ft-epochs 3
"""
from __future__ import annotations

import copy
import logging
import time

import torch

from benchmarks._structured import args, baseline, costs, fine_tune, latency_rows, subset
from benchmarks.common import machine, markdown_table, write_json
from netcompress.prune.structured import L2, ChannelPruning, Local, MACs, prune_channels
from netcompress.train import evaluate

ROUND_TO = 8


def torch_pruning(model, x, target_macs: float):
    """Torch-Pruning 1.6.1, group L2 magnitude, uniform ratio found by bisection to reach target_macs."""
    import torch_pruning as tp

    def prune(ratio):
        m = copy.deepcopy(model)
        tp.pruner.BasePruner(m, x, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio,
                             ignored_layers=[m.fc if hasattr(m, "fc") else m.classifier[-1]],
                             round_to=ROUND_TO).step()
        return m, tp.utils.count_ops_and_params(m, x)[0]

    lo, hi = 0.0, 0.9
    best = None
    for _ in range(8):
        mid = (lo + hi) / 2
        m, macs = prune(mid)
        if macs <= target_macs:
            hi, best = mid, (m, mid)
        else:
            lo = mid
    return best


def main():
    a = args(__doc__)
    torch.set_num_threads(a.threads)
    splits = subset(a.n_train)
    shape = splits.input_shape
    x1 = torch.randn(1, *shape)
    rows, payload = [], {"args": vars(a), "models": {}}
    for name in a.models:
        t0 = time.time()
        dense, dense_test = baseline(name, splits)
        dense.eval()
        dense_cost = costs(dense, x1)
        ours = copy.deepcopy(dense)
        r = prune_channels(ours, ChannelPruning(budget=MACs(0.5), importance=L2(), scope=Local(), round_to=ROUND_TO),
                           torch.randn(2, *shape))
        ours_oneshot = evaluate(ours, splits.test)["accuracy"]
        ours_test = fine_tune(ours, splits, a.ft_epochs)
        tp_model, tp_ratio = torch_pruning(dense, torch.randn(1, *shape), dense_cost["macs"] * 0.5)
        tp_oneshot = evaluate(tp_model, splits.test)["accuracy"]
        tp_test = fine_tune(tp_model, splits, a.ft_epochs)
        lat = latency_rows({"dense": dense, "ours": ours, "torch-pruning": tp_model}, shape, a.repeats, a.threads)
        entry = {"dense_test": dense_test, "plan": r.plan.to_dict(), "tp_ratio": tp_ratio, "latency": lat,
                 "seconds": time.time() - t0}
        for label, model, acc, one in (("dense", dense, dense_test["accuracy"], None),
                                       ("ours (L2, local, round_to=8)", ours, ours_test["accuracy"], ours_oneshot),
                                       (f"torch-pruning (GroupMagnitude p=2, ratio {tp_ratio:.3f})", tp_model,
                                        tp_test["accuracy"], tp_oneshot)):
            c = costs(model, x1)
            key = label.split(" ")[0]
            row = {"model": name, "method": label, "params": c["params"], "MACs": c["macs"],
                   "MAC ratio": dense_cost["macs"] / c["macs"], "acc one-shot": "" if one is None else f"{one * 100:.2f}",
                   "acc": f"{acc * 100:.2f}", "drop (pts)": f"{(dense_test['accuracy'] - acc) * 100:.2f}"}
            lk = {"dense": "dense", "ours": "ours", "torch-pruning": "torch-pruning"}[key]
            for k in ("eager_b32", "ort_b32", "eager_b1", "ort_b1"):
                row[f"{k} speedup"] = lat[lk][f"{k}_speedup"]
            row["eager_b32 / MAC ratio"] = lat[lk]["eager_b32_speedup"] / row["MAC ratio"]
            row["ort_b32 / MAC ratio"] = lat[lk]["ort_b32_speedup"] / row["MAC ratio"]
            rows.append(row)
            entry[key] = row
        payload["models"][name] = entry
        logging.getLogger(__name__).info("%s done in %.0fs", name, time.time() - t0)
        print(markdown_table([r_ for r_ in rows if r_["model"] == name]), flush=True)
    payload["rows"] = rows
    print(f"\nmachine: {machine()}\n")
    print(markdown_table(rows))
    write_json("structured_prune", payload)


if __name__ == "__main__":
    main()
