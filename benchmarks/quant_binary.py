"""Issue 5 claim 3: binary and ternary weights on Fashion-MNIST (LeNet-300-100, LeNet-5), plus INQ
power-of-two weights, each fine-tuned from the cached fp32 baseline with the same budget as an fp32
fine-tune of the same baseline (so the gap is the cost of the weight format, not of training).

    python -m benchmarks.quant_binary [--epochs N] [--model NAME]
"""
from __future__ import annotations

import copy
import logging
import time

from benchmarks.common import dataset, markdown_table, parser, start, subset, trained_baseline, write_json
from netcompress.quantize import TTQ, TWN, Binary, ClipShadow, PerChannel, Pow2, Ternary, quantize_
from netcompress.train import TrainConfig, Trainer, evaluate

log = logging.getLogger("bench")


def _fit(model, splits, epochs, lr, callbacks=()):
    cfg = TrainConfig(epochs=epochs, batch_size=128, lr=lr, optimizer="adam", scheduler="cosine", seed=0,
                      weight_decay=0.0, progress=False)
    Trainer(model, splits.train, cfg, val_data=splits.val, callbacks=callbacks).fit()


def main():
    ap = parser(__doc__, epochs=4, n_train=None)  # --n-train: the first N training images (a reduced budget)
    ap.add_argument("--model", action="append", choices=("lenet_300_100", "lenet5"))
    ap.add_argument("--only", action="append", default=None,
                    help="run only variants whose label starts with this (repeatable), e.g. TWN, BinaryConnect")
    ap.add_argument("--no-inq", action="store_true")
    ap.add_argument("--baseline-epochs", type=int, default=None)
    args = start(ap)
    splits = subset(dataset(), args.n_train, seed=None)
    overrides = {"epochs": args.baseline_epochs} if args.baseline_epochs else {}
    rows = []
    for name in args.model or ("lenet_300_100", "lenet5"):
        base, metrics = trained_baseline(name, splits, **overrides)
        variants = {
            "fp32 fine-tuned (same budget)": (None, ()),
            "BinaryConnect det. (H = Glorot)": (Binary(), (ClipShadow(),)),
            "BinaryConnect stoch. (H = Glorot)": (Binary(stochastic=True), (ClipShadow(),)),
            "binary + XNOR per-filter scale": (Binary(scale=PerChannel(0)), ()),
            "TWN (delta = 0.7 mean|w|)": (Ternary(TWN()), ()),
            "TTQ (t = 0.05)": (Ternary(TTQ(0.05)), ()),
        }
        rows.append({"model": name, "variant": "fp32 baseline", "accuracy": metrics["accuracy"], "epochs": 0})
        for label, (cfg, cbs) in variants.items():
            if args.only and cfg is not None and not any(label.startswith(o) for o in args.only):
                continue
            m = copy.deepcopy(base)
            if cfg is not None:
                quantize_(m, cfg)
            before = evaluate(m, splits.test)["accuracy"]
            t = time.time()
            _fit(m, splits, args.epochs, 1e-3, cbs)
            rows.append({"model": name, "variant": label, "accuracy": evaluate(m, splits.test)["accuracy"],
                         "before_ft": before, "epochs": args.epochs, "secs": time.time() - t})
        # INQ: 5-bit powers of two, 50% -> 75% -> 87.5% -> 100% frozen, retraining the rest in between
        if args.no_inq:
            continue
        m = copy.deepcopy(base)
        t = time.time()
        for frac in (0.5, 0.75, 0.875):
            quantize_(m, Pow2(bits=5, fraction=frac))
            _fit(m, splits, max(1, args.epochs // 3), 1e-4)
        quantize_(m, Pow2(bits=5, fraction=1.0))
        rows.append({"model": name, "variant": "INQ 5-bit powers of two",
                     "accuracy": evaluate(m, splits.test)["accuracy"],
                     "epochs": 3 * max(1, args.epochs // 3), "secs": time.time() - t})
    for name in {r["model"] for r in rows}:
        ref = next(r["accuracy"] for r in rows if r["model"] == name and r["variant"].startswith("fp32 fine"))
        for r in rows:
            if r["model"] == name:
                r["gap_vs_fp32_ft_pts"] = 100 * (ref - r["accuracy"])
    print(markdown_table(rows, ["model", "variant", "epochs", "accuracy", "gap_vs_fp32_ft_pts"]))
    tag = ("_".join(args.model) if args.model else "all") + (f"_n{args.n_train}" if args.n_train else "")
    write_json(f"quant_binary_{tag}", {"rows": rows, "epochs": args.epochs})


if __name__ == "__main__":
    main()
