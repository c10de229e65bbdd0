"""CNN distillation on Fashion-MNIST: teacher ResNet-56 -> students ResNet-20 and LeNet-5, trained
alone, with KD, FitNet (hint stage then KD), attention transfer, FSP, and KD+AT.

    python -m benchmarks.distill_cnn [--student-train 2500] [--epochs 2] [--test 5000]

Budget (2 shared CPU cores): every student run sees the same seeded training subset for the same
number of epochs (FitNet's hint stage counts towards them); the teacher's outputs are computed once
and shared by all runs (TeacherCache). The teacher is the shared ResNet-56 baseline when it is in the
cache, else a ResNet-56 trained here on a seeded subset (stated in the output).
"""
from __future__ import annotations

import argparse
import logging
import time

import torch

from benchmarks.common import machine, markdown_table, write_json
from benchmarks.distill_common import setup, cached_teacher, run, subset
from netcompress.distill import FSP, KD, AttentionTransfer, Distiller, Hint, TeacherCache, train_hints
from netcompress.models import create_model
from netcompress.train import TrainConfig, evaluate

TEACHER_TAPS = ["layer1", "layer2", "layer3", "layer1.0", "layer2.0", "layer3.0"]
STAGES = ("layer1", "layer2", "layer3")
# (student, method) -> terms; FitNet = hint stage (1 epoch) + KD
METHODS = {
    "resnet20": {
        "alone": [],
        "KD": [KD(temperature=4.0, alpha=0.9, beta=0.1)],
        "FitNet": [KD(temperature=4.0, alpha=0.9, beta=0.1)],
        "AT": [AttentionTransfer([(s, s) for s in STAGES])],
        "FSP": [FSP([((f"{s}.0", s), (f"{s}.0", s)) for s in STAGES])],
        "KD+AT": [KD(temperature=4.0, alpha=0.9, beta=0.1), AttentionTransfer([(s, s) for s in STAGES])],
    },
    "lenet5": {
        "alone": [],
        "KD": [KD(temperature=4.0, alpha=0.9, beta=0.1)],
        "FitNet": [KD(temperature=4.0, alpha=0.9, beta=0.1)],
        "AT": [AttentionTransfer([("features.1", "layer1"), ("features.3", "layer3")])],
        "KD+AT": [KD(temperature=4.0, alpha=0.9, beta=0.1),
                  AttentionTransfer([("features.1", "layer1"), ("features.3", "layer3")])],
    },
}
HINTS = {"resnet20": Hint("layer2", "layer2"), "lenet5": Hint("features.1", "layer2")}
# one-cycle (warm-up, then anneal): lr 0.1 without warm-up diverged for ResNet-56 in a 79-step epoch
SCHEDULE = dict(batch_size=64, lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=5e-4, scheduler="onecycle",
                seed=0, progress=False)


def teacher_model(splits, args, kw):
    """The ResNet-56 teacher: trained on a seeded subset with a stated budget, cached by config."""
    cfg = TrainConfig(epochs=args.teacher_epochs, **SCHEDULE)
    data = subset(splits.train, args.teacher_train)
    model, secs = cached_teacher("resnet56-subset", lambda: create_model("resnet56", **kw), data, cfg,
                                 {"data": splits.name, "n_train": len(data), "model_kwargs": kw})
    return model, secs, cfg


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher-train", type=int, default=5000)
    ap.add_argument("--teacher-epochs", type=int, default=3)
    ap.add_argument("--student-train", type=int, default=2500)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--test", type=int, default=5000, help="seeded test subset (evaluation is slow on 1 core)")
    ap.add_argument("--students", nargs="+", default=list(METHODS))
    args = ap.parse_args(argv)
    splits, kw = setup()
    test = subset(splits.test, args.test)
    teacher, teacher_s, tcfg = teacher_model(splits, args, kw)
    train = subset(subset(splits.train, args.teacher_train), args.student_train, seed=1)
    t_acc = evaluate(teacher, test)["accuracy"]
    rows = [{"student": "teacher resnet56", "method": f"{args.teacher_train} imgs x {args.teacher_epochs} ep",
             "test_acc_%": 100 * t_acc, "test_errors": int(round((1 - t_acc) * len(test))), "train_s": teacher_s}]
    logging.info("%s", rows[-1])

    cache = TeacherCache()
    start = time.time()
    Distiller(teacher, create_model("resnet20", **kw), AttentionTransfer([(s, s) for s in TEACHER_TAPS]),
              cache=cache).precompute(train)
    logging.info("teacher outputs for %d samples cached in %.0f s", len(cache), time.time() - start)

    for student in args.students:
        for method, terms in METHODS[student].items():
            # LeNet-5 has no BN: with KD it diverged (NaN at step 26) at this lr, so every LeNet-5 run clips
            cfg = TrainConfig(epochs=args.epochs, **SCHEDULE, grad_clip=2.0 if student == "lenet5" else None)
            torch.manual_seed(0)
            model = create_model(student, **kw)
            x = train.tensors[0][:8]
            hint_s = 0.0
            if method == "FitNet":  # stage 1: hints only, 1 epoch of the budget; stage 2: KD
                t0 = time.time()
                train_hints(teacher, model, train, HINTS[student], cfg.replace(epochs=1), example_input=x, cache=cache)
                hint_s = time.time() - t0
                cfg = cfg.replace(epochs=args.epochs - 1)
            cbs = [Distiller(teacher, model, terms, cache=cache, example_input=x)] if terms else []
            r = run(model, train, cfg, test, cbs)
            r["train_s"] += hint_s
            rows.append({"student": student, "method": method, **r})
            logging.info("%s", rows[-1])

    print(markdown_table(rows, ["student", "method", "test_acc_%", "test_errors", "train_s"]))
    name = "distill_cnn" if args.students == list(METHODS) else "distill_cnn_" + "_".join(args.students)
    print(write_json(name, {"args": vars(args), "teacher_config": tcfg.to_dict(), "rows": rows}))
    print(machine())
    return rows


if __name__ == "__main__":
    main()
