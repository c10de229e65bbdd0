"""CNN distillation on Fashion-MNIST: teacher ResNet-56 -> students ResNet-20 and LeNet-5, trained
alone, with KD, FitNet (hint stage then KD), attention transfer, FSP, and KD+AT.

    python -m benchmarks.distill_cnn [--seed 0] [--epochs 3] [--student-train 20000] [--students resnet20 lenet5]

The teacher is the shared full-data ResNet-56 trained 6 + 8 epochs (``distill_common.resnet56_teacher``;
``--teacher baseline``: the 6-epoch baseline only; ``--teacher subset``: a ResNet-56 trained here on a seeded
subset, for quick checks). ``--seed`` changes the student's initialisation and data order. Every student run of one
student uses the same data, the student's own dense-baseline schedule (benchmarks.common) and the same
number of epochs (FitNet's hint stage counts towards them). The teacher runs once over the training
data: its logits and the small summaries the feature terms need (attention energy maps, FSP matrices;
the hint layer's map) are cached in one TeacherCache shared by all runs. Test = the full test split.
Writes benchmarks/out/distill_cnn*.json after every run.
"""
from __future__ import annotations

import logging
import time

import torch

from benchmarks.common import BASELINE_SCHEDULES, machine, markdown_table, parser, trained_baseline, write_json
from benchmarks.distill_common import cached_teacher, resnet56_teacher, run, setup, subset
from netcompress.distill import FSP, KD, AttentionTransfer, Distiller, Hint, TeacherCache, train_hints
from netcompress.models import create_model
from netcompress.train import TrainConfig, evaluate

STAGES = ("layer1", "layer2", "layer3")
KD_TERM = KD(temperature=4.0, alpha=0.9, beta=0.1)
AT_RESNET = AttentionTransfer([(s, s) for s in STAGES])
AT_LENET = AttentionTransfer([("features.1", "layer1"), ("features.3", "layer3")])
# (student, method) -> terms; FitNet = hint stage (1 epoch) + KD
METHODS = {
    "resnet20": {
        "alone": [],
        "KD": [KD_TERM],
        "AT": [AT_RESNET],
        "KD+AT": [KD_TERM, AT_RESNET],
        "FitNet": [KD_TERM],
        "FSP": [FSP([((f"{s}.0", s), (f"{s}.0", s)) for s in STAGES])],
    },
    "lenet5": {
        "alone": [],
        "KD": [KD_TERM],
        "AT": [AT_LENET],
        "KD+AT": [KD_TERM, AT_LENET],
        "FitNet": [KD_TERM],
    },
}
HINTS = {"resnet20": Hint("layer2", "layer2"), "lenet5": Hint("features.1", "layer2")}
# the quick-check subset teacher: one-cycle, since lr 0.1 without warm-up diverged for ResNet-56 on 79 steps
SUBSET_SCHEDULE = dict(batch_size=64, lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=5e-4, scheduler="onecycle",
                       seed=0, progress=False)


def teacher_model(splits, args, kw):
    """(teacher, description): the shared full-data ResNet-56 baseline, or a subset-trained one."""
    if args.teacher == "continued":
        return resnet56_teacher(splits)
    if args.teacher == "baseline":
        model, _ = trained_baseline("resnet56", splits)
        return model, f"dense baseline, {len(splits.train)} imgs x {BASELINE_SCHEDULES['resnet56']['epochs']} ep"
    cfg = TrainConfig(epochs=args.teacher_epochs, **SUBSET_SCHEDULE)
    data = subset(splits.train, args.teacher_train)
    model, _ = cached_teacher("resnet56-subset", lambda: create_model("resnet56", **kw), data, cfg,
                              {"data": splits.name, "n_train": len(data), "model_kwargs": kw})
    return model, f"subset, {len(data)} imgs x {args.teacher_epochs} ep"


def student_config(student: str, epochs: int, seed: int = 0) -> TrainConfig:
    """The student's dense-baseline schedule (LeNet-5 clips gradients there) with ``epochs``."""
    return TrainConfig(**{**BASELINE_SCHEDULES[student], "epochs": epochs}, seed=seed, progress=False)


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--teacher", choices=["continued", "baseline", "subset"], default="continued",
                    help="continued: the 6-epoch baseline trained 8 epochs more (default); baseline: 6 epochs only")
    ap.add_argument("--seed", type=int, default=0, help="student initialisation and data order")
    ap.add_argument("--teacher-train", type=int, default=5000, help="with --teacher subset")
    ap.add_argument("--teacher-epochs", type=int, default=3, help="with --teacher subset")
    # a 20k transfer set x 3 epochs fits the shared 2-core machine (6 ResNet-20 runs ~16 core-minutes);
    # the teacher itself saw all 55k training images
    ap.add_argument("--student-train", type=int, default=20000,
                    help="seeded subset of the training split for every student run (0: all)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--test", type=int, default=None, help="seeded test subset (default: the full test split)")
    ap.add_argument("--students", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--methods", nargs="+", default=None, help="only these methods (default: all)")
    args, splits, kw = setup(ap, argv)
    test = splits.test if args.test is None else subset(splits.test, args.test)
    train = subset(splits.train, args.student_train, seed=1) if args.student_train else splits.train
    name = "distill_cnn" if args.students == list(METHODS) else "distill_cnn_" + "_".join(args.students)
    name += f"_seed{args.seed}" if args.seed else ""
    teacher, how = teacher_model(splits, args, kw)
    t_acc = evaluate(teacher, test)["accuracy"]
    rows = [{"student": "teacher resnet56", "method": how, "test_acc_%": 100 * t_acc,
             "test_errors": int(round((1 - t_acc) * len(test)))}]
    logging.info("%s", rows[-1])

    cache = TeacherCache()
    start = time.time()
    x = train.tensors[0][:8]
    every = [KD_TERM, AT_RESNET, *METHODS["resnet20"]["FSP"], HINTS["resnet20"]]  # all teacher targets
    Distiller(teacher, create_model("resnet20", **kw), every, cache=cache, example_input=x).precompute(train)
    cache_s = time.time() - start
    logging.info("teacher outputs for %d samples cached in %.0f s", len(cache), cache_s)

    for student in args.students:
        for method, terms in METHODS[student].items():
            if args.methods and method not in args.methods:
                continue
            cfg = student_config(student, args.epochs, args.seed)
            torch.manual_seed(args.seed)
            model = create_model(student, **kw)
            hint_s = 0.0
            if method == "FitNet":  # stage 1: hints only, 1 epoch of the budget; stage 2: KD
                t0 = time.time()
                train_hints(teacher, model, train, HINTS[student], cfg.replace(epochs=1), example_input=x, cache=cache)
                hint_s = time.time() - t0
                cfg = cfg.replace(epochs=args.epochs - 1)
            cbs = [Distiller(teacher, model, terms, cache=cache, example_input=x)] if terms else []
            r = run(model, train, cfg, test, cbs)
            r["train_s"] += hint_s
            rows.append({"student": student, "method": method, "seed": args.seed, **r})
            logging.info("%s", rows[-1])
            write_json(name, {"args": vars(args), "partial": True, "teacher_cache_s": cache_s, "rows": rows})

    print(markdown_table(rows, ["student", "method", "test_acc_%", "test_errors", "train_s"]))
    configs = {s: student_config(s, args.epochs, args.seed).to_dict() for s in args.students}
    print(write_json(name, {"args": vars(args), "student_configs": configs, "teacher_cache_s": cache_s,
                            "n_train": len(train), "n_test": len(test), "rows": rows}))
    print(machine())
    return rows


if __name__ == "__main__":
    main()
