"""Sensitivity analysis of a trained model (default LeNet-300-100 on Fashion-MNIST): each layer pruned
alone by magnitude over a sweep of levels, test accuracy; writes CSV + PNG to benchmarks/out/ and the
per-layer levels ``levels_for_target`` picks for a global target, with the accuracy they give
(one-shot, no fine-tuning) next to uniform layer-wise pruning at the same overall sparsity.

    python -m benchmarks.prune_sensitivity [--model lenet_300_100] [--target 0.9]
"""
from __future__ import annotations

import copy

from benchmarks.common import OUT_DIR, dataset, machine, markdown_table, parser, start, trained_baseline, write_json
from netcompress.measure import accuracy
from netcompress.prune import (Unstructured, apply_levels_, levels_for_target, prune_, select, sensitivity_analysis,
                               sparsity)
from netcompress.prune.sensitivity import plot, write_csv

LEVELS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--model", default="lenet_300_100")
    ap.add_argument("--target", type=float, default=0.9)
    args = start(ap)
    splits = dataset("fashion_mnist")
    base, base_metrics = trained_baseline(args.model, splits)
    rows = sensitivity_analysis(base, splits.test, levels=LEVELS)
    csv_path = write_csv(rows, OUT_DIR / f"sensitivity_{args.model}.csv", force=True)
    png_path = plot(rows, OUT_DIR / f"sensitivity_{args.model}.png", force=True)
    levels = levels_for_target(rows, args.target)
    chosen = copy.deepcopy(base)
    apply_levels_(chosen, levels)
    uniform = copy.deepcopy(base)
    prune_(uniform, Unstructured(sparsity=args.target))
    result = [{"method": "levels_for_target", "sparsity": sparsity(chosen, select(chosen)),
               "test_acc": 100 * accuracy(chosen, splits.test),
               "levels": str(levels)},
              {"method": "uniform layer-wise", "sparsity": sparsity(uniform, select(uniform)),
               "test_acc": 100 * accuracy(uniform, splits.test), "levels": f"all {args.target}"}]
    print(markdown_table(rows))
    print(f"dense: {100 * base_metrics['accuracy']:.2f}%  csv: {csv_path}  png: {png_path}")
    print(markdown_table(result))
    write_json(f"prune_sensitivity_{args.model}", {"rows": rows, "result": result, "machine": machine()})


if __name__ == "__main__":
    main()
