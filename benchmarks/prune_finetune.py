"""Claim 1: LeNet-300-100 and LeNet-5 on Fashion-MNIST pruned with fine-tuning reach >= 20x nonzero
compression at <= 0.3 points accuracy drop.

Method: start from the cached dense baseline (``trained_baseline``), prune by global magnitude along an
AGP cubic schedule inside training (``GradualPruning``), then fine-tune at the final sparsity; SGD
momentum 0.9, cosine lr. Reports params / nonzeros (all params incl. biases, and weights only), test
accuracy vs dense, and bytes on disk (dense safetensors vs ``save_sparse`` CSR and relative-index).

    python -m benchmarks.prune_finetune [--models lenet_300_100 lenet5] [--final 0.96]
        [--levels global|sensitivity] [--kd T] [--seeds 0 1 2] [--n-train N]

``--levels sensitivity`` replaces the global ranking by per-layer levels: each layer is pruned alone
over a sweep on the validation split (``sensitivity_analysis``), ``levels_for_target`` turns that table
and ``--final`` into per-layer levels (same total nonzeros), and each layer follows its own AGP curve.
``--kd T`` adds Hinton KD from the dense baseline to the task loss (``netcompress.distill``) during both
phases. ``--seeds`` repeats the run with other data orders (the baseline stays the same) and reports
the mean and spread.
"""
from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import dataset, machine, markdown_table, parser, start, subset, trained_baseline, write_json
from netcompress.core.io import save_weights
from netcompress.distill import KD, Distiller, TeacherCache
from netcompress.measure import count_nonzero, count_params, file_bytes
from netcompress.prune import (AGP, CSR, GradualPruning, Global, Layerwise, Magnitude, RelativeIndex, Unstructured,
                               bake_, levels_for_target, masked_targets, save_sparse, sensitivity_analysis)
from netcompress.train import TrainConfig, Trainer, evaluate

BUDGET = {  # (AGP epochs, fine-tune epochs at the final sparsity, lr)
    "lenet_300_100": (8, 4, 0.01),
    "lenet5": (6, 3, 0.01),
}


SWEEP = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99)


def layer_levels(base, splits, final: float) -> dict[str, float]:
    """Per-layer sparsities from a one-shot sensitivity sweep on the validation split (not the test split)."""
    return levels_for_target(sensitivity_analysis(base, splits.val, levels=SWEEP), final)


def pruning_callbacks(model, final: float, levels, schedule_kw: dict) -> list:
    """One global AGP callback, or one layer-wise AGP callback per layer towards its own level."""
    if levels is None:
        return [GradualPruning(model, Unstructured(sparsity=0.0, criterion=Magnitude(), scope=Global()),
                               AGP(final=final, **schedule_kw))]
    return [GradualPruning(model, Unstructured(sparsity=0.0, criterion=Magnitude(), scope=Layerwise(),
                                               include=(layer,)), AGP(final=level, **schedule_kw))
            for layer, level in levels.items() if level > 0]


def run(name: str, splits, final: float, budget=None, levels=None, kd: float = 0.0, seed: int = 0,
        teacher_cache=None, baseline=None) -> dict:
    """One pruning run from the dense ``baseline`` ((model, test metrics); default: the cached one)."""
    base, base_metrics = baseline or trained_baseline(name, splits)
    agp_epochs, ft_epochs, lr = budget or BUDGET[name]
    model = copy.deepcopy(base)
    cfg = TrainConfig(epochs=agp_epochs + ft_epochs, batch_size=128, lr=lr, optimizer="sgd", momentum=0.9,
                      weight_decay=1e-4, scheduler="cosine", seed=seed, progress=False)
    steps_per_epoch = -(-len(splits.train) // cfg.batch_size)
    callbacks = pruning_callbacks(model, final, levels, dict(end_step=agp_epochs * steps_per_epoch,
                                                             every=max(1, steps_per_epoch // 4)))
    if kd:
        # the dense baseline teaches its own pruned copy; a shared cache runs it once per sample over all
        # seeds, and must keep serving the same teacher object (Distiller checks that)
        cache = teacher_cache if teacher_cache is not None else TeacherCache()
        teacher = cache.teacher if cache.teacher is not None else copy.deepcopy(base)
        callbacks.append(Distiller(teacher, model, KD(temperature=kd, alpha=0.9, beta=0.1), cache=cache))
    t0 = time.perf_counter()
    Trainer(model, splits.train, cfg, val_data=splits.val, callbacks=callbacks).fit()
    seconds = time.perf_counter() - t0
    targets = list(masked_targets(model))  # a generator: read three times below
    weights = sum(t.original().numel() for t in targets)
    weights_nnz = sum(int(torch.count_nonzero(t.effective())) for t in targets)
    layer_sparsity = {t.name: round(1 - int(torch.count_nonzero(t.effective())) / t.original().numel(), 4)
                      for t in targets}
    acc = 100 * evaluate(model, splits.test)["accuracy"]
    dense_acc = 100 * base_metrics["accuracy"]
    with tempfile.TemporaryDirectory() as tmp:
        dense_bytes = file_bytes(save_weights(base, Path(tmp) / "dense.safetensors"))
        csr_bytes = file_bytes(save_sparse(model, Path(tmp) / "csr.safetensors", encoding=CSR()))
        rel_bytes = file_bytes(save_sparse(model, Path(tmp) / "rel4.safetensors", encoding=RelativeIndex(4)))
    bake_(model)
    return {"model": name, "seed": seed, "dense_acc": dense_acc, "pruned_acc": acc, "drop_pts": dense_acc - acc,
            "params": count_params(model), "nonzero": count_nonzero(model),
            "compression_all": count_params(model) / count_nonzero(model),
            "compression_weights": weights / weights_nnz,
            "dense_bytes": dense_bytes, "csr_bytes": csr_bytes, "rel4_bytes": rel_bytes,
            "disk_ratio_csr": dense_bytes / csr_bytes, "disk_ratio_rel4": dense_bytes / rel_bytes,
            "epochs": f"{agp_epochs} AGP + {ft_epochs} ft", "levels": "sensitivity" if levels else "global",
            "kd_T": kd, "layer_sparsity": layer_sparsity, "train_s": seconds}


def summary(rows: list[dict]) -> dict:
    """Mean and spread (sample std, min, max) of the drop and compression over seeds."""
    drops = [r["drop_pts"] for r in rows]
    comp = [r["compression_all"] for r in rows]
    return {"model": rows[0]["model"], "seeds": len(rows), "drop_mean": statistics.fmean(drops),
            "drop_std": statistics.stdev(drops) if len(drops) > 1 else 0.0, "drop_min": min(drops),
            "drop_max": max(drops), "compression_min": min(comp), "compression_mean": statistics.fmean(comp)}


def main() -> None:
    ap = parser(__doc__, models=list(BUDGET), seeds=[0], n_train=None, tag="")
    ap.add_argument("--final", type=float, default=0.96)
    ap.add_argument("--budget", type=float, nargs=3, metavar=("AGP_EPOCHS", "FT_EPOCHS", "LR"),
                    help="override the per-model schedule")
    ap.add_argument("--levels", choices=("global", "sensitivity"), default="global",
                    help="global magnitude ranking, or per-layer levels from a validation sensitivity sweep")
    ap.add_argument("--kd", type=float, default=0.0, metavar="T",
                    help="KD temperature: distil from the dense baseline while pruning and fine-tuning (0 = off)")
    args = start(ap)  # --n-train: prune/fine-tune on the first N training images (the baseline is the full-data one)
    budget = (int(args.budget[0]), int(args.budget[1]), args.budget[2]) if args.budget else None
    torch.manual_seed(0)
    splits = dataset("fashion_mnist")
    rows, summaries, chosen = [], [], {}
    for name in args.models:
        baseline = trained_baseline(name, splits)  # the full-data baseline, whatever --n-train says
        levels = layer_levels(baseline[0], splits, args.final) if args.levels == "sensitivity" else None
        chosen[name] = levels
        data = subset(splits, args.n_train, seed=None)
        cache = TeacherCache() if args.kd else None
        per_model = []
        for seed in args.seeds:
            per_model.append(run(name, data, args.final, budget, levels, args.kd, seed, cache, baseline))
            print(per_model[-1], flush=True)
        rows += per_model
        summaries.append(summary(per_model))
    print(markdown_table(rows, [c for c in rows[0] if c != "layer_sparsity"]))
    print(markdown_table(summaries))
    write_json("prune_finetune" + args.tag, {"final_sparsity": args.final, "args": vars(args), "levels": chosen,
                                             "rows": rows, "summary": summaries, "machine": machine()})


if __name__ == "__main__":
    main()
