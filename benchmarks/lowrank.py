"""Low-rank factorization on trained Fashion-MNIST models: plain vs data-aware SVD, Tucker-2, and
depthwise-separable redesign of the convs.

For each model and method: weights and MACs kept, accuracy one-shot and after a short fine-tune, and
measured speed-ups (torch eager and onnxruntime, batch 32 and 1, 1 thread, interleaved medians).

    python -m benchmarks.lowrank --models lenet5 vgg_small --ft-epochs 1
"""
from __future__ import annotations

import copy
import time

import torch

from benchmarks.common import (costs, dataset, fine_tune, latency_rows, machine, markdown_table, parser, start, subset,
                               trained_baseline, write_json)
from netcompress.arch import DepthwiseSeparable
from netcompress.lowrank import SVD, Tucker2, decompose_
from netcompress.train import evaluate

METHODS = {
    "svd-keep0.5": [SVD(keep=0.5)],
    "svd-aware-keep0.5": [SVD(keep=0.5, data_aware=True)],
    "svd-keep0.25": [SVD(keep=0.25)],
    "svd-aware-keep0.25": [SVD(keep=0.25, data_aware=True)],
    # convs by Tucker-2, the Linear layers by data-aware SVD
    "tucker2+svd-aware-keep0.5": [Tucker2(keep=0.5), SVD(keep=0.5, data_aware=True, min_saving=0.01)],
    # architecture redesign: every kxk conv -> depthwise + pointwise, initialised by per-channel SVD
    "separable-m1": [DepthwiseSeparable(multiplier=1)],
    "separable-m3": [DepthwiseSeparable(multiplier=3)],
}


def main() -> None:
    p = parser(__doc__, models=["lenet5", "vgg_small"], methods=list(METHODS), n_train=6000, n_test=0, ft_epochs=3,
               repeats=20, threads=1)
    a = start(p)
    splits = subset(dataset(), a.n_train, a.n_test)
    x1 = torch.zeros(1, *splits.input_shape)
    rows, record = [], {"machine": machine(), "args": vars(a), "models": {}}
    for name in a.models:
        dense, base = trained_baseline(name, splits)
        calib = splits.calibration(1024)  # inputs only: data-aware SVD needs no labels
        models = {"dense": dense.eval()}
        table = {"dense": {**costs(dense, x1), "acc_oneshot": base["accuracy"], "acc_ft": base["accuracy"]}}
        for method in a.methods:
            model = copy.deepcopy(dense)
            t0 = time.perf_counter()
            for cfg in METHODS[method]:
                decompose_(model, cfg, data=calib)
            seconds = time.perf_counter() - t0
            one = evaluate(model, splits.test)["accuracy"]
            ft = fine_tune(model, splits, a.ft_epochs)["accuracy"]
            models[method] = model.eval()
            table[method] = {**costs(model, x1), "acc_oneshot": one, "acc_ft": ft, "decompose_s": seconds}
        speed = latency_rows(models, splits.input_shape, a.repeats, a.threads)
        d = table["dense"]
        for method, r in table.items():
            rows.append({"model": name, "method": method, "params": r["params"], "macs": r["macs"],
                         "MAC ratio": d["macs"] / r["macs"], "acc one-shot": 100 * r["acc_oneshot"],
                         f"acc +{a.ft_epochs} ep FT": 100 * r["acc_ft"],
                         "drop (pts)": 100 * (d["acc_ft"] - r["acc_ft"]),
                         **{k: speed[method][k] for k in ("eager_b32_speedup", "ort_b32_speedup",
                                                          "eager_b1_speedup", "ort_b1_speedup")}})
        record["models"][name] = {"table": table, "latency": speed}
    print(markdown_table(rows))
    record["rows"] = rows
    print("wrote", write_json("lowrank", record))


if __name__ == "__main__":
    main()
