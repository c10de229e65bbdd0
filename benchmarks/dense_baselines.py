"""Dense baselines on Fashion-MNIST: test accuracy, params, MACs, latency at batch 1 and 64.

    python -m benchmarks.dense_baselines [--retrain]
"""
from __future__ import annotations

import argparse

import torch

from benchmarks.common import dataset, machine, markdown_table, trained_baseline, write_json
from netcompress.measure import analyze, compare_latency, set_threads

MODELS = ("lenet_300_100", "lenet5", "resnet20")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--retrain", action="store_true", help="ignore cached baselines")
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args(argv)
    set_threads(2)  # training
    splits = dataset()
    trained = {}
    for name in MODELS:
        trained[name] = trained_baseline(name, splits, retrain=args.retrain)
    set_threads(1)  # latency: 1 thread (DESIGN.md section 5); measured in a fresh process by make target
    rows = []
    for name, (model, test) in trained.items():
        a = analyze(model, torch.zeros(1, *splits.input_shape)).totals
        row = {"model": name, "test_acc_%": 100 * test["accuracy"], "params": a["params"], "MACs": a["macs"]}
        for batch in (1, 64):
            stats = compare_latency({name: model}, torch.randn(batch, *splits.input_shape), repeats=args.repeats)
            row[f"ms_b{batch}"] = stats[name].median_ms
        rows.append(row)
    table = markdown_table(rows)
    print(table)
    print(write_json("dense_baselines", {"rows": rows}))
    return rows


if __name__ == "__main__":
    main()
