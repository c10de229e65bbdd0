"""Hinton et al. 2015 (sec. 3) on Fashion-MNIST: teacher MLP 1200-1200 (hidden dropout, +-1 px jitter),
students 800-800 and 30-30 trained alone (no regularisation) vs with KD, and a temperature sweep.

    python -m benchmarks.distill_hinton [--epochs 10] [--teacher-epochs 20] [--temps 1 2 4 8 20] [--temps-large 2 8 20]

Every student run uses the same seed, schedule and epochs; the headline KD temperature per student
is picked on the validation split (never on test); the teacher's logits are computed once and shared
by every KD run (one TeacherCache). Writes benchmarks/out/distill_hinton.{json,png} (the JSON after
every run, so a stopped run keeps its rows).
"""
from __future__ import annotations

import logging

import torch

from benchmarks.common import OUT_DIR, machine, markdown_table, parser, trained_baseline, write_json
from benchmarks.distill_common import setup, Jitter, cached_teacher, run, subset
from netcompress.core.errors import NetcompressError
from netcompress.distill import KD, Distiller, TeacherCache
from netcompress.models import create_model
from netcompress.train import TrainConfig, evaluate

STUDENTS = {"30-30": ("mlp", {"hidden": (30, 30)}), "800-800": ("mlp_800_800", {})}


def plot(rows, alone, path, teacher="MLP 1200-1200"):
    """Test errors against T per student, with each student alone and the teacher as lines; ``rows`` as
    in the JSON (``python -c`` can replot a finished run from benchmarks/out/distill_hinton.json)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for (student, base), color in zip(alone.items(), ("tab:blue", "tab:orange")):
        pts = sorted((r["T"], r["test_errors"]) for r in rows
                     if r["student"] == student and r["method"] == "KD" and r["test_errors"] is not None)
        ok = [p for p in pts if p[1] < 5000]  # runs that collapsed to chance are marked, not plotted
        ax.plot([p[0] for p in ok], [p[1] for p in ok], "o-", color=color, label=f"{student} + KD")
        for T, _ in (p for p in pts if p[1] >= 5000):
            ax.annotate(f"{student} T={T:g}: collapsed", (T, base), xytext=(T, base * 1.25), fontsize=7,
                        ha="right", color=color, arrowprops=dict(arrowstyle="->", color=color))
        ax.axhline(base, color=color, ls="--", lw=1, label=f"{student} alone")
    if rows[0]["test_errors"] is not None:
        ax.axhline(rows[0]["test_errors"], color="gray", ls=":", lw=1.5, label=f"teacher {teacher}")
    ax.set_xscale("log")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("test errors (of 10,000)")
    ax.set_title(f"Fashion-MNIST: KD from {teacher}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--epochs", type=int, default=10, help="epochs of every student run")
    ap.add_argument("--teacher-epochs", type=int, default=20)
    ap.add_argument("--teacher-dropout", type=float, default=0.3,
                    help="teacher hidden dropout (0.5, Hinton's value, under-fit here: 87.7%% after 10 epochs)")
    ap.add_argument("--grad-clip", type=float, default=5.0,
                    help="gradient-norm clip of every student run (KD at T=20 diverged without it at lr 0.05)")
    ap.add_argument("--jitter", type=int, default=1, help="teacher input jitter, pixels")
    ap.add_argument("--input-dropout", type=float, default=0.0,
                    help="teacher input dropout (Hinton's MNIST value 0.2 + 2 px jitter gave an under-fit "
                         "teacher, 86.0%% on Fashion-MNIST in 15 epochs, worse than the students alone)")
    ap.add_argument("--temps", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0, 20.0], help="sweep for 30-30")
    ap.add_argument("--temps-large", type=float, nargs="+", default=[2.0, 8.0, 20.0],
                    help="sweep for 800-800 (each run costs ~10x a 30-30 run on the shared CPU)")
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--student-train", type=int, default=None,
                    help="seeded subset of the training split for every student run (default: all)")
    ap.add_argument("--teacher", default="mlp_1200_1200", choices=["mlp_1200_1200", "mlp_800_800", "resnet20"],
                    help="diagnostics: mlp_800_800 = an unregularised 800-800 teacher; resnet20 = the full-data "
                         "ResNet-20 baseline (does a teacher far ahead of the students make KD pay?)")
    ap.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    args, splits, kw = setup(ap, argv)

    tcfg = TrainConfig(epochs=args.teacher_epochs, batch_size=128, lr=0.05, optimizer="sgd", momentum=0.9,
                       scheduler="cosine", seed=0, progress=False)
    extra = (dict(dropout=args.teacher_dropout, input_dropout=args.input_dropout)
             if args.teacher == "mlp_1200_1200" else {})
    if args.teacher == "resnet20":  # the shared full-data dense baseline, far ahead of any MLP here
        teacher, _ = trained_baseline("resnet20", splits)
        teacher_s, how = 0.0, "dense baseline (benchmarks.common)"
    else:
        teacher, teacher_s = cached_teacher(
            f"{args.teacher}-jitter{args.jitter}-indrop{args.input_dropout}-drop{extra.get('dropout', 0)}",
            lambda: create_model(args.teacher, **kw, **extra), Jitter(splits.train, args.jitter), tcfg,
            {"data": splits.name, "n_train": len(splits.train), "model_kwargs": kw})
        how = f"{extra}, jitter {args.jitter}px, {args.teacher_epochs} epochs"
    t_test = evaluate(teacher, splits.test)
    rows = [{"student": f"teacher {args.teacher}", "method": how,
             "T": None,
             "val_acc_%": 100 * evaluate(teacher, splits.val)["accuracy"], "test_acc_%": 100 * t_test["accuracy"],
             "test_errors": int(round((1 - t_test["accuracy"]) * t_test["n"])), "train_s": teacher_s}]

    scfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.05, optimizer="sgd", momentum=0.9,
                       scheduler="cosine", seed=0, progress=False, grad_clip=args.grad_clip)
    out = "distill_hinton" if args.teacher == "mlp_1200_1200" else f"distill_hinton_{args.teacher}"
    out += f"_{args.epochs}ep" if args.epochs != 10 else ""
    out += f"_n{args.student_train}" if args.student_train is not None else ""
    cache = TeacherCache()  # the teacher's logits, once for every KD run
    student_data = splits.train if args.student_train is None else subset(splits.train, args.student_train)
    alone = {}
    for student in args.students:
        name, extra = STUDENTS[student]
        for T in [None, *(args.temps if student == "30-30" else args.temps_large)]:
            torch.manual_seed(0)
            model = create_model(name, **kw, **extra)
            cbs = [] if T is None else [Distiller(teacher, model, KD(temperature=T, alpha=args.alpha,
                                                                      beta=1 - args.alpha), cache=cache)]
            try:
                r = run(model, student_data, scfg, splits.test, cbs)
                r["val_acc_%"] = 100 * evaluate(model, splits.val)["accuracy"]
            except NetcompressError as exc:  # e.g. the loss became NaN at a high temperature
                logging.warning("student %s T=%s stopped: %s", student, T, exc)
                r = {"test_acc_%": float("nan"), "test_errors": None, "train_s": None, "val_acc_%": float("-inf"),
                     "note": "diverged (NaN loss)"}
            rows.append({"student": student, "method": "alone" if T is None else "KD", "T": T, **r})
            logging.info("%s", rows[-1])
            write_json(out, {"args": vars(args), "partial": True, "rows": rows})
            if T is None:
                alone[student] = r["test_errors"]

    summary = []
    for student in args.students:
        kd_rows = [r for r in rows if r["student"] == student and r["method"] == "KD"]
        best = max(kd_rows, key=lambda r: r["val_acc_%"])  # picked on validation, not test
        cut = (alone[student] - best["test_errors"]) / alone[student]
        summary.append({"student": student, "alone_errors": alone[student], "kd_T (val-picked)": best["T"],
                        "kd_errors": best["test_errors"], "error_cut_%": 100 * cut,
                        "target_cut_%": 20.0, "met": cut >= 0.20})
    cols = ["student", "method", "T", "val_acc_%", "test_acc_%", "test_errors", "train_s", "note"]
    print(markdown_table(rows, cols))
    print()
    print(markdown_table(summary))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    plot(rows, alone, OUT_DIR / f"{out}.png", rows[0]["student"].replace("teacher ", ""))
    print(write_json(out, {"args": vars(args), "student_config": scfg.to_dict(),
                                        "teacher_config": tcfg.to_dict(), "rows": rows, "summary": summary}))
    print(machine())
    return rows, summary


if __name__ == "__main__":
    main()
