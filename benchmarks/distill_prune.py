"""KD as the fine-tuning loss after pruning: a trained ResNet-20 is pruned to 75% unstructured sparsity
(global L1 magnitude over conv + linear weights, torch.nn.utils.prune masks), then fine-tuned with the
same budget by cross-entropy alone vs cross-entropy + KD, with two teachers: the ResNet-56 of
benchmarks.distill_cnn, and the dense ResNet-20 itself (the usual "distil from the unpruned model").

    python -m benchmarks.distill_prune [--sparsity 0.75] [--budgets 1 2] [--test 5000]

The teacher and the training subsets are those of benchmarks.distill_cnn (same cache entries).
"""
from __future__ import annotations

import argparse
import copy
import logging

from torch import nn
from torch.nn.utils import prune

from benchmarks.common import machine, markdown_table, write_json
from benchmarks.distill_cnn import SCHEDULE, teacher_model
from benchmarks.distill_common import setup, cached_teacher, run, subset
from netcompress.distill import KD, Distiller, TeacherCache
from netcompress.models import create_model
from netcompress.train import TrainConfig, evaluate


def sparsity(model: nn.Module) -> float:
    ws = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return float(sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher-train", type=int, default=5000)
    ap.add_argument("--teacher-epochs", type=int, default=3)
    ap.add_argument("--student-train", type=int, default=2500)
    ap.add_argument("--sparsity", type=float, default=0.75)
    ap.add_argument("--budgets", type=int, nargs="+", default=[1], help="fine-tuning epochs")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--test", type=int, default=5000)
    args = ap.parse_args(argv)
    splits, kw = setup()
    test = subset(splits.test, args.test)
    dense_data = subset(splits.train, args.teacher_train)
    dcfg = TrainConfig(epochs=args.teacher_epochs, **SCHEDULE)
    dense, _ = cached_teacher("resnet20-subset", lambda: create_model("resnet20", **kw), dense_data, dcfg,
                              {"data": splits.name, "n_train": len(dense_data), "model_kwargs": kw})
    teacher, _, _ = teacher_model(splits, args, kw)  # after the dense model: may wait for distill_cnn's run
    train = subset(dense_data, args.student_train, seed=1)

    def acc(model):
        return 100 * evaluate(model, test)["accuracy"]

    t_acc, d_acc = acc(teacher), acc(dense)
    pruned = copy.deepcopy(dense)
    params = [(m, "weight") for m in pruned.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=args.sparsity)
    p_acc = acc(pruned)
    rows = [{"model": "teacher resnet56", "fine-tune": "-", "epochs": 0, "sparsity_%": 100 * sparsity(teacher),
             "test_acc_%": t_acc},
            {"model": "resnet20 dense", "fine-tune": "-", "epochs": 0, "sparsity_%": 100 * sparsity(dense),
             "test_acc_%": d_acc},
            {"model": "resnet20 pruned", "fine-tune": "none", "epochs": 0, "sparsity_%": 100 * sparsity(pruned),
             "test_acc_%": p_acc}]
    teachers = {"resnet56": (teacher, TeacherCache()), "dense resnet20": (dense, TeacherCache())}
    for epochs in args.budgets:
        for method in ("CE", "CE+KD from resnet56", "CE+KD from dense resnet20"):
            model = copy.deepcopy(pruned)
            cfg = TrainConfig(epochs=epochs, batch_size=64, lr=args.lr, optimizer="sgd", momentum=0.9,
                              weight_decay=5e-4, scheduler="cosine", seed=0, progress=False)  # no warm-up: fine-tuning
            cbs = []
            if method != "CE":
                t, cache = teachers[method.split(" from ")[1]]
                cbs = [Distiller(t, model, KD(temperature=4.0, alpha=0.9, beta=0.1), cache=cache)]
            r = run(model, train, cfg, test, cbs)
            gap = d_acc - p_acc
            rows.append({"model": "resnet20 pruned", "fine-tune": method, "epochs": epochs,
                         "sparsity_%": 100 * sparsity(model), "test_acc_%": r["test_acc_%"],
                         "recovered_%_of_drop": 100 * (r["test_acc_%"] - p_acc) / gap if gap > 0 else None,
                         "train_s": r["train_s"]})
            logging.info("%s", rows[-1])
    print(markdown_table(rows, ["model", "fine-tune", "epochs", "sparsity_%", "test_acc_%", "recovered_%_of_drop",
                                "train_s"]))
    print(write_json("distill_prune", {"args": vars(args), "dense_config": dcfg.to_dict(), "rows": rows}))
    print(machine())
    return rows


if __name__ == "__main__":
    main()
