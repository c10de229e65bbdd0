"""KD as the fine-tuning loss after pruning. The shared full-data dense ResNet-20 baseline is pruned,
then fine-tuned with the same budget by cross-entropy alone vs cross-entropy + KD from the dense
model itself (the usual "distil from the unpruned model"; optionally also from the continued ResNet-56 teacher).

    python -m benchmarks.distill_prune [--kinds structured unstructured] [--epochs 1] [--teachers dense resnet56]

structured: channels removed physically to half the MACs (``prune_channels``, ChannelPruning(budget=MACs(0.5)),
L1 filter norms); unstructured: 75% of the conv/linear weights by global magnitude (``prune_``). Fine-tune:
the full training split, SGD lr 0.01 cosine (no warm-up), momentum 0.9, wd 5e-4, batch 128, seed --seed;
KD = T 4, alpha 0.9, beta 0.1 with the teacher's logits cached once (TeacherCache). Test = the full
test split. After pruning, BatchNorm statistics are re-estimated on 2,048 training images (no weight
update), the common starting point of both fine-tunes. Writes benchmarks/out/distill_prune.json after every run.
"""
from __future__ import annotations

import copy
import logging
import time

import torch

from benchmarks.common import machine, markdown_table, parser, trained_baseline, write_json
from benchmarks.distill_common import resnet56_teacher, run, setup, subset
from netcompress.distill import KD, Distiller, TeacherCache
from netcompress.measure import count_params
from netcompress.prune import Global, Magnitude, Unstructured, prune_, sparsity
from netcompress.prune.structured import L1, ChannelPruning, MACs, prune_channels
from netcompress.train import TrainConfig, evaluate, recalibrate_bn


def pruned_copy(dense, kind: str, x: torch.Tensor, amount: float):
    model = copy.deepcopy(dense)
    if kind == "structured":
        r = prune_channels(model, ChannelPruning(budget=MACs(amount), importance=L1()), x)
        return model, f"MACs {r.before['macs']:,} -> {r.after['macs']:,}, params {r.before['params']:,} -> " \
                      f"{r.after['params']:,}"
    prune_(model, Unstructured(sparsity=amount, criterion=Magnitude(), scope=Global()))
    return model, f"{100 * sparsity(model):.1f}% of conv/linear weights zero"


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--kinds", nargs="+", default=["structured"], choices=["structured", "unstructured"])
    ap.add_argument("--macs", type=float, default=0.5, help="structured: fraction of MACs kept")
    ap.add_argument("--sparsity", type=float, default=0.75, help="unstructured: fraction of weights removed")
    ap.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--bn-images", type=int, default=2048,
                    help="training images to re-estimate BN statistics after pruning (before either fine-tune)")
    ap.add_argument("--teachers", nargs="+", default=["dense"], choices=["dense", "resnet56"])
    ap.add_argument("--seed", type=int, default=0, help="fine-tuning data order (the pruned model is the same)")
    ap.add_argument("--student-train", type=int, default=None, help="seeded training subset (default: all)")
    ap.add_argument("--test", type=int, default=None, help="seeded test subset (default: the full test split)")
    args, splits, kw = setup(ap, argv)
    test = splits.test if args.test is None else subset(splits.test, args.test)
    train = splits.train if args.student_train is None else subset(splits.train, args.student_train, seed=1)
    x = train.tensors[0][:8]
    out_name = "distill_prune" + (f"_seed{args.seed}" if args.seed else "")

    def acc(model):
        return 100 * evaluate(model, test)["accuracy"]

    dense, _ = trained_baseline("resnet20", splits)
    teachers = {"dense": copy.deepcopy(dense)}  # a Distiller freezes its teacher; pruned copies come from `dense`
    if "resnet56" in args.teachers:
        teachers["resnet56"], _ = resnet56_teacher(splits)
    rows = [{"model": f"{n} (teacher)" if n != "dense" else "resnet20 dense", "fine-tune": "-", "epochs": 0,
             "params": count_params(m), "test_acc_%": acc(m)} for n, m in teachers.items()]
    d_acc = rows[0]["test_acc_%"]
    caches = {n: TeacherCache() for n in args.teachers}
    cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=args.lr, optimizer="sgd", momentum=0.9,
                      weight_decay=5e-4, scheduler="cosine", seed=args.seed, progress=False)
    for kind in args.kinds:
        pruned, how = pruned_copy(dense, kind, x, args.macs if kind == "structured" else args.sparsity)
        rows.append({"model": f"resnet20 {kind}", "fine-tune": "none", "epochs": 0, "params": count_params(pruned),
                     "test_acc_%": acc(pruned), "note": how})
        recalibrate_bn(pruned, train, args.bn_images)
        p_acc = acc(pruned)
        rows.append({"model": f"resnet20 {kind}", "fine-tune": f"BN statistics re-estimated ({args.bn_images} imgs)",
                     "epochs": 0, "params": count_params(pruned), "test_acc_%": p_acc})
        for method in ["CE", *(f"CE+KD from {t}" for t in args.teachers)]:
            model = copy.deepcopy(pruned)
            cbs, cache_s = [], 0.0
            if method != "CE":
                t = method.split(" from ")[1]
                d = Distiller(teachers[t], model, KD(temperature=4.0, alpha=0.9, beta=0.1), cache=caches[t])
                if not len(caches[t]):
                    start = time.time()
                    d.precompute(train)
                    cache_s = time.time() - start
                cbs = [d]
            r = run(model, train, cfg, test, cbs)
            gap = d_acc - p_acc
            rows.append({"model": f"resnet20 {kind}", "fine-tune": method, "epochs": args.epochs,
                         "params": count_params(model), "test_acc_%": r["test_acc_%"],
                         "recovered_%_of_drop": 100 * (r["test_acc_%"] - p_acc) / gap if gap > 0 else None,
                         "train_s": r["train_s"], "teacher_cache_s": cache_s})
            logging.info("%s", rows[-1])
            write_json(out_name, {"args": vars(args), "partial": True, "rows": rows})
    print(markdown_table(rows, ["model", "fine-tune", "epochs", "params", "test_acc_%", "recovered_%_of_drop",
                                "train_s", "teacher_cache_s", "note"]))
    print(write_json(out_name, {"args": vars(args), "finetune_config": cfg.to_dict(), "rows": rows}))
    print(machine())
    return rows


if __name__ == "__main__":
    main()
