"""Claim 1: LeNet-300-100 and LeNet-5 on Fashion-MNIST pruned with fine-tuning reach >= 20x nonzero
compression at <= 0.3 points accuracy drop.

Method: start from the cached dense baseline (``trained_baseline``), prune by global magnitude along an
AGP cubic schedule inside training (``GradualPruning``), then fine-tune at the final sparsity; SGD
momentum 0.9, cosine lr. Reports params / nonzeros (all params incl. biases, and weights only), test
accuracy vs dense, and bytes on disk (dense safetensors vs ``save_sparse`` CSR and relative-index).

    python -m benchmarks.prune_finetune [--models lenet_300_100 lenet5] [--final 0.96]
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import dataset, machine, markdown_table, trained_baseline, write_json
from netcompress.core.io import save_weights
from netcompress.measure import count_nonzero, count_params, file_bytes, set_threads
from netcompress.prune import (AGP, CSR, GradualPruning, Global, Magnitude, RelativeIndex, Unstructured,
                               bake_, masked_targets, save_sparse)
from netcompress.train import TrainConfig, Trainer, evaluate

BUDGET = {  # (AGP epochs, fine-tune epochs at the final sparsity, lr)
    "lenet_300_100": (8, 4, 0.01),
    "lenet5": (6, 3, 0.01),
}


def run(name: str, splits, final: float, budget=None) -> dict:
    base, base_metrics = trained_baseline(name, splits)
    agp_epochs, ft_epochs, lr = budget or BUDGET[name]
    model = copy.deepcopy(base)
    cfg = TrainConfig(epochs=agp_epochs + ft_epochs, batch_size=128, lr=lr, optimizer="sgd", momentum=0.9,
                      weight_decay=1e-4, scheduler="cosine", seed=0, progress=False)
    steps_per_epoch = -(-len(splits.train) // cfg.batch_size)
    schedule = AGP(final=final, end_step=agp_epochs * steps_per_epoch, every=max(1, steps_per_epoch // 4))
    cb = GradualPruning(model, Unstructured(sparsity=0.0, criterion=Magnitude(), scope=Global()), schedule)
    t0 = time.perf_counter()
    Trainer(model, splits.train, cfg, val_data=splits.val, callbacks=[cb]).fit()
    seconds = time.perf_counter() - t0
    weights = sum(t.original().numel() for t in masked_targets(model))
    weights_nnz = sum(int(torch.count_nonzero(t.effective())) for t in masked_targets(model))
    acc = 100 * evaluate(model, splits.test)["accuracy"]
    dense_acc = 100 * base_metrics["accuracy"]
    with tempfile.TemporaryDirectory() as tmp:
        dense_bytes = file_bytes(save_weights(base, Path(tmp) / "dense.safetensors"))
        csr_bytes = file_bytes(save_sparse(model, Path(tmp) / "csr.safetensors", encoding=CSR()))
        rel_bytes = file_bytes(save_sparse(model, Path(tmp) / "rel4.safetensors", encoding=RelativeIndex(4)))
    bake_(model)
    return {"model": name, "dense_acc": dense_acc, "pruned_acc": acc, "drop_pts": dense_acc - acc,
            "params": count_params(model), "nonzero": count_nonzero(model),
            "compression_all": count_params(model) / count_nonzero(model),
            "compression_weights": weights / weights_nnz,
            "dense_bytes": dense_bytes, "csr_bytes": csr_bytes, "rel4_bytes": rel_bytes,
            "disk_ratio_csr": dense_bytes / csr_bytes, "disk_ratio_rel4": dense_bytes / rel_bytes,
            "epochs": f"{agp_epochs} AGP + {ft_epochs} ft", "train_s": seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=list(BUDGET))
    ap.add_argument("--final", type=float, default=0.96)
    ap.add_argument("--budget", type=float, nargs=3, metavar=("AGP_EPOCHS", "FT_EPOCHS", "LR"),
                    help="override the per-model schedule")
    ap.add_argument("--tag", default="", help="suffix of the JSON output name")
    args = ap.parse_args()
    budget = (int(args.budget[0]), int(args.budget[1]), args.budget[2]) if args.budget else None
    set_threads(1)
    torch.manual_seed(0)
    splits = dataset("fashion_mnist")
    rows = []
    for name in args.models:
        rows.append(run(name, splits, args.final, budget))
        print(rows[-1], flush=True)
    print(markdown_table(rows))
    write_json("prune_finetune" + args.tag, {"final_sparsity": args.final, "rows": rows, "machine": machine()})


if __name__ == "__main__":
    main()
