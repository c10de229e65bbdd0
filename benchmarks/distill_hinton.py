"""Hinton et al. 2015 (sec. 3) on Fashion-MNIST: teacher MLP 1200-1200 (dropout, +-2 px jitter),
students 800-800 and 30-30 trained alone vs with KD, and a temperature sweep.

    python -m benchmarks.distill_hinton [--epochs 10] [--teacher-epochs 15] [--temps 1 2 4 8 20]

Every student run uses the same seed, schedule and epochs; the headline KD temperature per student
is picked on the validation split (never on test). Writes benchmarks/out/distill_hinton.{json,png}.
"""
from __future__ import annotations

import argparse
import logging

import torch

from benchmarks.common import OUT_DIR, dataset, machine, markdown_table, write_json
from benchmarks.distill_common import Jitter, cached_teacher, run
from netcompress.distill import KD, Distiller
from netcompress.models import create_model
from netcompress.train import TrainConfig, evaluate

STUDENTS = {"800-800": ("mlp_800_800", {}), "30-30": ("mlp", {"hidden": (30, 30)})}


def plot(rows, alone, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for (student, base), color in zip(alone.items(), ("tab:blue", "tab:orange")):
        pts = sorted((r["T"], r["test_errors"]) for r in rows if r["student"] == student and r["method"] == "KD")
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=f"{student} + KD")
        ax.axhline(base, color=color, ls="--", lw=1, label=f"{student} alone")
    ax.set_xscale("log")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("test errors (of 10,000)")
    ax.set_title("Fashion-MNIST: KD from MLP 1200-1200")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10, help="epochs of every student run")
    ap.add_argument("--teacher-epochs", type=int, default=15)
    ap.add_argument("--temps", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0, 20.0])
    ap.add_argument("--alpha", type=float, default=0.9)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    splits = dataset()
    c, h, _ = splits.input_shape
    kw = dict(in_channels=c, input_size=h, num_classes=splits.num_classes)

    tcfg = TrainConfig(epochs=args.teacher_epochs, batch_size=128, lr=0.05, optimizer="sgd", momentum=0.9,
                       scheduler="cosine", seed=0, progress=False)
    teacher, teacher_s = cached_teacher(
        "mlp_1200_1200-jitter2", lambda: create_model("mlp_1200_1200", **kw), Jitter(splits.train, 2), tcfg,
        {"data": splits.name, "n_train": len(splits.train), "model_kwargs": kw})
    t_test = evaluate(teacher, splits.test)
    rows = [{"student": "teacher 1200-1200", "method": "dropout+jitter", "T": None,
             "val_acc_%": 100 * evaluate(teacher, splits.val)["accuracy"], "test_acc_%": 100 * t_test["accuracy"],
             "test_errors": int(round((1 - t_test["accuracy"]) * t_test["n"])), "train_s": teacher_s}]

    scfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.05, optimizer="sgd", momentum=0.9,
                       scheduler="cosine", seed=0, progress=False)
    alone = {}
    for student, (name, extra) in STUDENTS.items():
        for T in [None, *args.temps]:
            torch.manual_seed(0)
            model = create_model(name, **kw, **extra)
            cbs = [] if T is None else [Distiller(teacher, model, KD(temperature=T, alpha=args.alpha,
                                                                      beta=1 - args.alpha), cache=True)]
            r = run(model, splits.train, scfg, splits.test, cbs)
            r["val_acc_%"] = 100 * evaluate(model, splits.val)["accuracy"]
            rows.append({"student": student, "method": "alone" if T is None else "KD", "T": T, **r})
            logging.info("%s", rows[-1])
            if T is None:
                alone[student] = r["test_errors"]

    summary = []
    for student in STUDENTS:
        kd_rows = [r for r in rows if r["student"] == student and r["method"] == "KD"]
        best = max(kd_rows, key=lambda r: r["val_acc_%"])  # picked on validation, not test
        cut = (alone[student] - best["test_errors"]) / alone[student]
        summary.append({"student": student, "alone_errors": alone[student], "kd_T (val-picked)": best["T"],
                        "kd_errors": best["test_errors"], "error_cut_%": 100 * cut,
                        "target_cut_%": 20.0, "met": cut >= 0.20})
    cols = ["student", "method", "T", "val_acc_%", "test_acc_%", "test_errors", "train_s"]
    print(markdown_table(rows, cols))
    print()
    print(markdown_table(summary))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    plot(rows, alone, OUT_DIR / "distill_hinton.png")
    print(write_json("distill_hinton", {"args": vars(args), "student_config": scfg.to_dict(),
                                        "teacher_config": tcfg.to_dict(), "rows": rows, "summary": summary}))
    print(machine())
    return rows, summary


if __name__ == "__main__":
    main()
