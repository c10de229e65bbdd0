"""Issue 5 claim 2: PTQ on ResNet-20 (Fashion-MNIST): int8 per-channel and 4-bit weights.

Accuracy of the torch fake-quant model (and, for int8, of the real onnxruntime int8 graph) on the
test split, against the cached dense baseline; the calibration statistics file and the per-layer
SQNR report; 4-bit weights with MSE clipping, then a short QAT (LSQ) if clipping is not enough;
mixed precision under a 4-bit average budget.

    python -m benchmarks.quant_ptq [--quick]
"""
from __future__ import annotations

import copy
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import OUT_DIR, dataset, markdown_table, parser, start, subset, trained_baseline, write_json
from netcompress.core.errors import NetcompressError
from netcompress.export import Int8Onnx, ort_session, quantize_onnx, to_onnx
from netcompress.quantize import (MSE, PTQ, QAT, FreezeBN, MinMax, MixedPrecision, PerChannel, Percentile,
                                  PerTensor, QuantSpec, convert_qat_, quantize_, sqnr_report, write_stats_file)
from netcompress.train import TrainConfig, Trainer, evaluate

log = logging.getLogger("bench")


def _ort_predict(path, data, batch=256) -> np.ndarray:
    sess = ort_session(path, threads=1)
    name = sess.get_inputs()[0].name
    x = data.tensors[0]
    return np.concatenate([np.argmax(sess.run(None, {name: x[i:i + batch].numpy()})[0], 1)
                           for i in range(0, len(x), batch)])


@torch.no_grad()
def _torch_predict(model, data, batch=256) -> np.ndarray:
    model.eval()
    x = data.tensors[0]
    return np.concatenate([model(x[i:i + batch]).argmax(1).numpy() for i in range(0, len(x), batch)])


def main():
    ap = parser(__doc__, quick=False, n_train=None)  # --n-train: the baseline on the first N training images
    ap.add_argument("--epochs", type=int, default=None, help="baseline epochs (default: the shared schedule)")
    ap.add_argument("--qat-n-train", type=int, default=None, help="QAT on the first N training images (default all)")
    ap.add_argument("--qat-lr", type=float, default=0.002,
                    help="QAT learning rate (0.01 diverged on the full-data baseline)")
    ap.add_argument("--qat-epochs", type=int, default=None, help="QAT epochs (default 2, 1 with --quick/--n-train)")
    args = start(ap)
    splits = subset(dataset(), args.n_train, seed=None)
    overrides = {"epochs": args.epochs} if args.epochs else {}
    base, metrics = trained_baseline("resnet20", splits, **overrides)
    base.eval()
    base_acc = metrics["accuracy"]
    calib = splits.calibration(512) if hasattr(splits, "calibration") else splits.train
    rows = [{"variant": "fp32 (baseline)", "weights": "fp32", "acts": "fp32", "accuracy": base_acc}]

    def ptq_row(label, cfg, wdesc, adesc):
        m = copy.deepcopy(base)
        t = time.time()
        quantize_(m, cfg, data=calib)
        acc = evaluate(m, splits.test)["accuracy"]
        rows.append({"variant": label, "weights": wdesc, "acts": adesc, "accuracy": acc, "secs": time.time() - t})
        log.warning("%s: %.4f (drop %.2f pts)", label, acc, 100 * (base_acc - acc))
        return m

    int8 = ptq_row("PTQ int8 per-channel, act min/max", PTQ(), "s8 per-ch min/max", "u8 min/max")
    stats_path = write_stats_file(int8, OUT_DIR / "quant_ptq_resnet20_stats.yaml", force=True)
    sq = sqnr_report(int8, splits.test.tensors[0][:256])
    ptq_row("PTQ int8 per-channel, act percentile", PTQ(act_observer=Percentile(99.99)), "s8 per-ch min/max",
            "u8 p99.99")
    ptq_row("PTQ int8 per-channel, act MSE", PTQ(act_observer=MSE()), "s8 per-ch min/max", "u8 MSE")
    ptq_row("PTQ int8 per-tensor", PTQ(weight=QuantSpec(8, True, PerTensor())), "s8 per-tensor", "u8 min/max")
    w4 = QuantSpec(4, True, PerChannel(0))
    ptq_row("PTQ 4-bit weights min/max", PTQ(weight=w4), "4-bit per-ch min/max", "u8 min/max")
    ptq_row("PTQ 4-bit weights MSE clipping", PTQ(weight=w4, weight_observer=MSE()), "4-bit per-ch MSE", "u8 min/max")
    # QAT: 4-bit weights, learned scales, BN frozen for the last epoch
    qat = copy.deepcopy(base)
    epochs = 1 if args.quick or args.n_train else 2
    epochs = args.qat_epochs or epochs
    qat_train = splits.train
    if args.qat_n_train:
        qat_train = torch.utils.data.TensorDataset(*(t[:args.qat_n_train] for t in splits.train.tensors))
    quantize_(qat, QAT(weight=w4, learn_scale=True), data=calib)
    t = time.time()
    try:
        Trainer(qat, qat_train, TrainConfig(epochs=epochs, batch_size=128, lr=args.qat_lr, optimizer="sgd",
                                            scheduler="cosine", weight_decay=0.0, seed=0, progress=False,
                                            grad_clip=1.0),
                val_data=splits.val, callbacks=(FreezeBN(epoch=epochs - 1),)).fit()
        qat_acc = evaluate(qat, splits.test)["accuracy"]
    except NetcompressError as exc:  # a diverged run is a result to report, not a reason to lose the others
        log.warning("QAT failed: %s", exc)
        qat_acc = float("nan")
    rows.append({"variant": f"QAT 4-bit weights (LSQ, {epochs} epochs on {len(qat_train)} images, lr {args.qat_lr}, "
                            "BN frozen last epoch)",
                 "weights": "4-bit per-ch LSQ", "acts": "u8 EMA", "accuracy": qat_acc, "secs": time.time() - t})
    if qat_acc == qat_acc:
        convert_qat_(qat)
        rows.append({"variant": "QAT 4-bit converted (baked weights, BN folded, fp32 acts)", "weights": "4-bit per-ch",
                     "acts": "fp32", "accuracy": evaluate(qat, splits.test)["accuracy"]})
    mp = copy.deepcopy(base)
    bits = quantize_(mp, MixedPrecision(budget_bits=4.0, candidates=(2, 3, 4, 6, 8)), data=calib).details["bits"]
    rows.append({"variant": "mixed precision weights, avg <= 4 bits (SQNR sensitivity)",
                 "weights": "/".join(str(b) for b in bits.values()), "acts": "fp32",
                 "accuracy": evaluate(mp, splits.test)["accuracy"]})
    # the real int8 graph in onnxruntime, and how often it predicts what torch fake-quant (min/max) predicts
    fq_pred = _torch_predict(int8, splits.test)
    y = splits.test.tensors[1].numpy()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = to_onnx(base, splits.test.tensors[0][:2], Path(tmp) / "r20.onnx")
        for label, obs in (("min/max", MinMax()), ("percentile 99.999", Percentile(99.999))):
            q = quantize_onnx(fp32, Path(tmp) / "q.onnx", Int8Onnx(observer=obs), data=calib, force=True)
            pred = _ort_predict(q, splits.test)
            rows.append({"variant": f"onnxruntime int8 QDQ (ours, act {label})", "weights": "s8 per-ch",
                         "acts": "u8", "accuracy": float((pred == y).mean()),
                         "same_pred_as_fake_quant": float((pred == fq_pred).mean())})
    for r in rows:
        r["drop_pts"] = 100 * (base_acc - r["accuracy"])
    print(markdown_table(rows, ["variant", "weights", "acts", "accuracy", "drop_pts", "same_pred_as_fake_quant"]))
    worst = sorted(sq, key=lambda r: r["output_sqnr_db"])[:4]
    print("\nlowest per-layer output SQNR (int8):")
    print(markdown_table(worst, ["layer", "output_sqnr_db", "layer_sqnr_db"]))
    print(f"\nstatistics file: {stats_path}; mixed-precision bits: {bits}")
    write_json("quant_ptq", {"baseline": {"n_train": len(splits.train), **overrides, "accuracy": base_acc},
                             "qat": {"n_train": len(qat_train), "epochs": epochs}, "rows": rows, "sqnr": sq,
                             "mixed_bits": bits, "stats_file": str(stats_path)})


if __name__ == "__main__":
    main()
