"""Issue 5 claim 1: Deep Compression on Fashion-MNIST, LeNet-300-100 and LeNet-5.

prune (issue-3's magnitude masks, iterative with fine-tuning) -> k-means weight sharing with
linear initialisation and centroid fine-tuning -> Huffman coding of cluster indices and sparse
index gaps. Storage ratios are real file bytes (codebooks, Huffman tables, header, biases all
included) against the dense float32 parameters; the entropy of the stored symbols is reported beside.

    python -m benchmarks.deep_compression [--model lenet_300_100|lenet5] [--quick] [--kd T]

``--kd T`` fine-tunes every stage (after each prune step, and the centroids) with Hinton KD from the dense
baseline added to the cross-entropy (``netcompress.distill``; the teacher's logits are cached per image).
"""
from __future__ import annotations

import copy
import math
import logging
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import dataset, markdown_table, parser, start, subset, trained_baseline, write_json
from benchmarks.prune_finetune import pruning_callbacks
from netcompress.distill import KD, Distiller, TeacherCache
from netcompress.export import compression_table, load_compressed, save_compressed
from netcompress.models import create_model
from netcompress.prune import Unstructured, prune_
from netcompress.quantize import Clustered, centroid_parameters, quantize_
from netcompress.train import TrainConfig, Trainer, evaluate

log = logging.getLogger("bench")

# per-layer sparsity (fraction removed) and cluster bits; Han et al. kept 8% / 8% of LeNet-300-100 / LeNet-5
PLANS = {
    # a little less pruning of fc1/fc2 than the 57.3x run (95 / 91 %), which landed 0.01 pt over the budget;
    # 8 epochs per step: 5 gave 0.29-0.35 pt drops, 8 gave 0.19 (RESULTS.md, issue 5 claim 1)
    "lenet_300_100": {"sparsity": {"net.1": 0.945, "net.3": 0.90, "net.5": 0.7},
                      "bits": {"net.1": 4, "net.3": 4, "net.5": 5}, "steps": 4, "epochs": 8, "centroid_epochs": 6},
    # conv1 nearly dense and fc1 hardest, as the sensitivity sweep of benchmarks.prune_finetune ranks them
    "lenet5": {"sparsity": {"features.0": 0.3, "features.2": 0.85, "classifier.1": 0.95, "classifier.3": 0.8},
               "bits": {"features.0": 6, "features.2": 5, "classifier.1": 4, "classifier.3": 5},
               "steps": 3, "epochs": 3, "centroid_epochs": 3},
}


def _fit(model, splits, epochs, lr, optimizer=None, seed=0, teacher=None):
    """Fine-tune; ``teacher`` = (dense model, KD term, TeacherCache) adds KD from the dense baseline."""
    cfg = TrainConfig(epochs=epochs, batch_size=128, lr=lr, optimizer="sgd", scheduler="cosine", seed=seed,
                      weight_decay=0.0, progress=False)
    callbacks = [Distiller(teacher[0], model, teacher[1], cache=teacher[2])] if teacher else []
    Trainer(model, splits.train, cfg, val_data=splits.val, optimizer=optimizer, callbacks=callbacks).fit()


def with_overrides(plan: dict, args) -> dict:
    """The plan with the command line's --sparsity/--bits LAYER=VALUE and --steps/--epochs/--centroid-epochs."""
    plan = {**plan, "sparsity": dict(plan["sparsity"]), "bits": dict(plan["bits"])}
    for key, cast in (("sparsity", float), ("bits", int)):
        for item in getattr(args, key) or ():
            layer, _, value = item.partition("=")
            if layer not in plan[key]:
                raise SystemExit(f"--{key} {item}: layer must be one of {sorted(plan[key])}")
            plan[key][layer] = cast(value)
    for key in ("steps", "epochs", "centroid_epochs", "agp"):
        if getattr(args, key, None) is not None:
            plan[key] = getattr(args, key)
    return plan


def _step_prune(model, splits, plan, quick, teacher, name) -> None:
    """Iterative magnitude pruning: each step removes the same fraction of what remains, fine-tuning between."""
    steps = 1 if quick else plan["steps"]
    ft_epochs = 1 if quick else plan["epochs"]
    for i in range(1, steps + 1):
        for layer, final in plan["sparsity"].items():
            s = 1 - (1 - final) ** (i / steps)
            prune_(model, Unstructured(sparsity=s, include=(layer,)))
        _fit(model, splits, ft_epochs, 0.02, teacher=teacher)
        log.warning("%s prune step %d: accuracy %.4f", name, i, evaluate(model, splits.test)["accuracy"])


def _agp_prune(model, splits, plan, teacher) -> None:
    """Gradual pruning inside training as in benchmarks.prune_finetune: each layer follows its own AGP
    curve to its plan level over ``agp[0]`` epochs, then ``agp[1]`` epochs at the final levels."""
    agp_epochs, ft_epochs = plan["agp"]
    cfg = TrainConfig(epochs=agp_epochs + ft_epochs, batch_size=128, lr=0.02, optimizer="sgd", momentum=0.9,
                      weight_decay=1e-4, scheduler="cosine", seed=0, progress=False)
    steps_per_epoch = -(-len(splits.train) // cfg.batch_size)
    callbacks = pruning_callbacks(model, 0.0, plan["sparsity"], dict(end_step=agp_epochs * steps_per_epoch,
                                                                     every=max(1, steps_per_epoch // 4)))
    if teacher:
        callbacks.append(Distiller(teacher[0], model, teacher[1], cache=teacher[2]))
    Trainer(model, splits.train, cfg, val_data=splits.val, callbacks=callbacks).fit()


def run(name: str, splits, quick: bool, tmp: Path, overrides: dict, kd: float = 0.0,
        plan: dict | None = None) -> tuple[list[dict], list[dict]]:
    plan = plan or PLANS[name]
    model, base_metrics = trained_baseline(name, splits, **overrides)
    teacher = (copy.deepcopy(model), KD(temperature=kd, alpha=0.9, beta=0.1), TeacherCache()) if kd else None
    base_acc = base_metrics["accuracy"]
    dense_bytes = sum(p.numel() for p in model.parameters()) * 4
    stages = [{"model": name, "stage": "dense fp32 (baseline)", "accuracy": base_acc, "bytes": dense_bytes,
               "ratio": 1.0}]
    t0 = time.time()
    if plan.get("agp"):
        _agp_prune(model, splits, plan, teacher)
    else:
        _step_prune(model, splits, plan, quick, teacher, name)
    acc_pruned = evaluate(model, splits.test)["accuracy"]
    p_path = save_compressed(model, tmp / f"{name}_pruned.ncz")  # sparse, exact fp32 values
    stages.append({"model": name, "stage": "pruned (fp32 values, Huffman-coded gaps)", "accuracy": acc_pruned,
                   "bytes": p_path.stat().st_size, "ratio": dense_bytes / p_path.stat().st_size})
    # 2) k-means weight sharing + centroid fine-tuning (gradients summed per centroid)
    quantize_(model, Clustered(bits=8, bits_by_layer=tuple(plan["bits"].items())))
    acc_clustered = evaluate(model, splits.test)["accuracy"]
    params = centroid_parameters(model) + [p for n, p in model.named_parameters() if n.endswith("bias")]
    _fit(model, splits, 1 if quick else plan["centroid_epochs"], 0.002,
         optimizer=torch.optim.SGD(params, lr=0.002, momentum=0.9), teacher=teacher)
    acc_q = evaluate(model, splits.test)["accuracy"]
    # the same codes without entropy coding: fixed-width cluster index + fixed-width gap per entry
    table_rows, fixed_bits = [], 0
    # 3) Huffman coding: the real file
    path = save_compressed(model, tmp / f"{name}.ncz", meta={"model": name})
    final_bytes = path.stat().st_size
    restored = load_compressed(path, create_model(name))
    acc_file = evaluate(restored, splits.test)["accuracy"]
    rows = compression_table(path)
    entropy_bytes = 0.0
    for r in rows:
        if r["encoding"] == "sparse":  # same entries at fixed width: ceil(log2(book + 1)) + gap bits, + codebook
            fixed_bits += r["gap_entries"] * (math.ceil(math.log2(r["book"] + 1)) + r["gap_bits"]) + 32 * r["book"]
            entropy_bytes += r["entropy_bytes"]
        else:
            fixed_bits += r["bytes"] * 8
            entropy_bytes += r["bytes"]
        table_rows.append({"model": name, **r})
    stages.append({"model": name, "stage": "pruned + clustered (same codes at fixed width, computed)",
                   "accuracy": acc_q,
                   "bytes": int(fixed_bits / 8), "ratio": dense_bytes / (fixed_bits / 8)})
    stages.append({"model": name, "stage": "pruned + clustered + Huffman (.ncz file)", "accuracy": acc_file,
                   "bytes": final_bytes, "ratio": dense_bytes / final_bytes})
    stages.append({"model": name, "stage": "entropy bound of stored symbols (+ raw tensors, codebooks)",
                   "accuracy": float("nan"), "bytes": int(entropy_bytes), "ratio": dense_bytes / entropy_bytes})
    for s in stages:
        s["drop_pts"] = 100 * (base_acc - s["accuracy"]) if s["accuracy"] == s["accuracy"] else float("nan")
    log.warning("%s: clustered before fine-tune %.4f; wall %.0fs", name, acc_clustered, time.time() - t0)
    return stages, table_rows


def main():
    ap = parser(__doc__, quick=False, n_train=None, tag="")  # --n-train: the first N training images, baseline too
    ap.add_argument("--model", choices=tuple(PLANS), action="append")
    ap.add_argument("--baseline-epochs", type=int, default=None)
    ap.add_argument("--kd", type=float, default=0.0, metavar="T",
                    help="KD temperature: fine-tune every stage with KD from the dense baseline (0 = off)")
    ap.add_argument("--sparsity", nargs="+", metavar="LAYER=S", help="override the plan's per-layer sparsity")
    ap.add_argument("--bits", nargs="+", metavar="LAYER=B", help="override the plan's per-layer cluster bits")
    ap.add_argument("--steps", type=int, help="override the number of prune steps")
    ap.add_argument("--epochs", type=int, help="override the fine-tuning epochs after each prune step")
    ap.add_argument("--centroid-epochs", type=int, help="override the centroid fine-tuning epochs")
    ap.add_argument("--agp", type=int, nargs=2, metavar=("AGP_EPOCHS", "FT_EPOCHS"),
                    help="prune gradually inside training (per-layer AGP to the plan levels, as prune_finetune) "
                         "instead of the prune/fine-tune steps")
    args = start(ap)
    splits = subset(dataset(), args.n_train, seed=None)
    overrides = {"epochs": args.baseline_epochs} if args.baseline_epochs else {}
    stages, tables = [], []
    plans = {name: with_overrides(PLANS[name], args) for name in args.model or list(PLANS)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, plan in plans.items():
            s, t = run(name, splits, args.quick, Path(tmp), overrides, args.kd, plan)
            stages += s
            tables += t
    print(markdown_table(stages, ["model", "stage", "accuracy", "drop_pts", "bytes", "ratio"]))
    print()
    print(markdown_table(tables, ["model", "tensor", "params", "encoding", "kept_pct", "weight_bits", "index_bits",
                                  "bytes", "compression", "entropy_bytes"]))
    tag = "_".join(args.model or list(PLANS)) + ("_quick" if args.quick else "") + (
        f"_n{args.n_train}" if args.n_train else "") + ("_kd" if args.kd else "") + args.tag
    write_json(f"deep_compression_{tag}", {"stages": stages, "layers": tables, "plans": plans, "quick": args.quick,
                                           "n_train": len(splits.train), "baseline_overrides": overrides,
                                           "kd_temperature": args.kd})


if __name__ == "__main__":
    main()
