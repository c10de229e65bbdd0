"""Claims 2 and 5: one-shot pruning of a trained LeNet-300-100 (Fashion-MNIST) at 90/95/98% global
sparsity without fine-tuning: magnitude vs OBD vs OBS/WoodFisher test accuracy, then the same after a
fixed one-epoch fine-tune; and the wall time of one-shot OBS pruning.

The dense baseline comes from ``trained_baseline("lenet_300_100")`` (fixed seeded 12-epoch schedule,
cached by config hash). OBS: block 64, relative damping 1e-3, 1024 Fisher samples, 8 recomputation steps.

    python -m benchmarks.prune_oneshot
"""
from __future__ import annotations

import copy
import time

import torch

from benchmarks.common import dataset, machine, markdown_table, parser, start, trained_baseline, write_json
from netcompress.measure import count_nonzero, count_params
from netcompress.prune import OBD, OBS, Global, Magnitude, Unstructured, prune_, sparsity
from netcompress.train import TrainConfig, Trainer, evaluate

FINE_TUNE = TrainConfig(epochs=1, batch_size=128, lr=0.01, optimizer="sgd", momentum=0.9, scheduler=None,
                        seed=0, progress=False)


def criteria(args):
    return {"magnitude": Magnitude(), "OBD": OBD(samples=args.samples),
            "OBS": OBS(samples=args.samples, block_size=args.block, damping=args.damping, steps=args.steps)}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--damping", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--levels", type=float, nargs="+", default=[0.9, 0.95, 0.98])
    ap.add_argument("--no-finetune", action="store_true")
    args = start(ap)
    splits = dataset("fashion_mnist")
    base, base_metrics = trained_baseline("lenet_300_100", splits)
    calib = (splits.train.tensors[0][:args.samples], splits.train.tensors[1][:args.samples])
    rows = []
    for level in args.levels:
        for name, crit in criteria(args).items():
            model = copy.deepcopy(base)
            t0 = time.perf_counter()
            prune_(model, Unstructured(sparsity=level, criterion=crit, scope=Global()), data=calib)
            seconds = time.perf_counter() - t0
            row = {"sparsity": level, "criterion": name, "prune_s": seconds,
                   "compression": count_params(model) / count_nonzero(model),
                   "acc_oneshot": 100 * evaluate(model, splits.test)["accuracy"]}
            if not args.no_finetune:
                Trainer(model, splits.train, FINE_TUNE).fit()
                row["acc_finetuned_1ep"] = 100 * evaluate(model, splits.test)["accuracy"]
            row["sparsity_measured"] = sparsity(model)
            rows.append(row)
            print(row, flush=True)
    dense = 100 * base_metrics["accuracy"]
    for r in rows:
        r["drop_oneshot"] = dense - r["acc_oneshot"]
        if "acc_finetuned_1ep" in r:
            r["drop_finetuned"] = dense - r["acc_finetuned_1ep"]
    print(f"dense LeNet-300-100 test accuracy: {dense:.2f}%")
    print(markdown_table(rows))
    write_json("prune_oneshot", {"dense_accuracy": dense, "args": vars(args), "rows": rows,
                                 "fine_tune": str(FINE_TUNE), "machine": machine()})


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
