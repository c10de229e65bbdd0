"""Claim 3: SNIP and GraSP at 95% and 98% sparsity, pruned at initialisation and trained from scratch,
beat random pruning at the same sparsity and schedule (mean and spread over 3 seeds).

LeNet-300-100 on Fashion-MNIST; global scope for all three criteria (global random = uniform per
layer); scores from 1024 training samples; each run trains the same short schedule (``--epochs``,
SGD momentum 0.9, lr 0.05 cosine).

    python -m benchmarks.prune_at_init [--epochs 5] [--seeds 0 1 2]
"""
from __future__ import annotations

import statistics

import torch

from benchmarks.common import dataset, machine, markdown_table, parser, start, write_json
from netcompress.models import create_model
from netcompress.prune import SNIP, Global, GraSP, Random, Unstructured, prune_, sparsity
from netcompress.train import TrainConfig, Trainer, evaluate


def main() -> None:
    ap = parser(__doc__, epochs=5, seeds=[0, 1, 2])
    ap.add_argument("--levels", type=float, nargs="+", default=[0.95, 0.98])
    args = start(ap)
    splits = dataset("fashion_mnist")
    calib = (splits.train.tensors[0][:1024], splits.train.tensors[1][:1024])
    runs = []
    for level in args.levels:
        for seed in args.seeds:
            for name in ("SNIP", "GraSP", "random"):
                crit = {"SNIP": SNIP(samples=1024), "GraSP": GraSP(samples=1024), "random": Random(seed=seed)}[name]
                torch.manual_seed(seed)
                model = create_model("lenet_300_100")
                prune_(model, Unstructured(sparsity=level, criterion=crit, scope=Global()), data=calib)
                cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.05, optimizer="sgd", momentum=0.9,
                                  scheduler="cosine", seed=seed, progress=False)
                Trainer(model, splits.train, cfg).fit()
                runs.append({"sparsity": level, "criterion": name, "seed": seed,
                             "measured_sparsity": sparsity(model),
                             "test_acc": 100 * evaluate(model, splits.test)["accuracy"]})
                print(runs[-1], flush=True)
    rows = []
    for level in args.levels:
        for name in ("SNIP", "GraSP", "random"):
            accs = [r["test_acc"] for r in runs if r["sparsity"] == level and r["criterion"] == name]
            rows.append({"sparsity": level, "criterion": name, "mean_acc": statistics.mean(accs),
                         "std_acc": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                         "min_acc": min(accs), "max_acc": max(accs), "seeds": len(accs)})
    print(markdown_table(rows))
    write_json("prune_at_init", {"epochs": args.epochs, "rows": rows, "runs": runs, "machine": machine()})


if __name__ == "__main__":
    main()
