"""Early exits on the trained ResNet-20 (Fashion-MNIST): heads after layer1 and layer2 trained with the
backbone frozen (so the last exit *is* the dense model), then a confidence-threshold sweep: accuracy,
share of samples leaving at each exit, mean MACs per sample; and measured batch-1 time per sample of
the dynamic model against the dense one (1 thread, interleaved medians over the same test images).

    python -m benchmarks.dynamic_exits --epochs 2
"""
from __future__ import annotations

import torch

from benchmarks.common import dataset, machine, markdown_table, parser, start, trained_baseline, write_json
from netcompress.dynamic import EarlyExitNet, ExitLoss, MaxProb, exit_macs, exit_policy_table, freeze_backbone_
from netcompress.measure.latency import compare_latency
from netcompress.train import TrainConfig, Trainer

THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)


def main() -> None:
    p = parser(__doc__, epochs=2, repeats=7)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--points", nargs="+", default=["layer1", "layer2"])
    p.add_argument("--head-width", type=int, default=32)
    p.add_argument("--latency-images", type=int, default=300)
    p.add_argument("--latency-thresholds", type=float, nargs="+", default=[0.9, 0.99])
    a = start(p)
    splits = dataset()
    dense, base = trained_baseline(a.model, splits)
    dense.eval()
    x_test, y_test = splits.test.tensors
    net = EarlyExitNet(dense, a.points, x_test[:2], head_width=a.head_width)
    freeze_backbone_(net)
    cfg = TrainConfig(epochs=a.epochs, batch_size=128, lr=0.05, scheduler="cosine", weight_decay=5e-4,
                      progress=False)
    history = Trainer(net, splits.train, cfg, callbacks=[ExitLoss(net)]).fit()
    net.eval()
    with torch.no_grad():
        exits = [torch.cat(z) for z in zip(*(net.all_exits(x_test[i:i + 500]) for i in range(0, len(x_test), 500)))]
    macs = exit_macs(net, x_test[:1])
    rows = [{"threshold": "each exit alone", **{f"exit {k} acc": 100 * float((z.argmax(1) == y_test).float().mean())
                                               for k, z in enumerate(exits)}}]
    sweep = []
    for t in THRESHOLDS:
        r = exit_policy_table(exits, y_test, MaxProb(t), macs)
        sweep.append({"threshold": t, "accuracy": 100 * r["accuracy"],
                      "drop (pts)": 100 * (base["accuracy"] - r["accuracy"]),
                      **{f"share exit {k}": s for k, s in enumerate(r["exit_shares"])},
                      "mean MACs": r["mean_macs"], "MAC saving": macs[-1] / r["mean_macs"]})
    # measured: the same images one at a time through the dense model and the dynamic one
    images = [x_test[i:i + 1] for i in range(a.latency_images)]

    def run(model, threshold=None):
        def go():
            if threshold is not None:
                net.criterion = MaxProb(threshold)  # one network, its threshold set per candidate
            with torch.no_grad():
                for im in images:
                    model(im)
        return go

    candidates = {"dense": run(dense)}
    for t in a.latency_thresholds:
        candidates[f"exits@{t}"] = run(net, t)
    stats = compare_latency(candidates, warmup=1, repeats=a.repeats, threads=1)
    timing = [{"model": k, "ms per image (batch 1)": s.median_ms / a.latency_images,
               "speed-up": stats["dense"].median_ms / s.median_ms} for k, s in stats.items()]
    print(f"dense {a.model}: {100 * base['accuracy']:.2f}% ; exits at {a.points}, MACs per exit {macs}")
    print(markdown_table(rows))
    print(markdown_table(sweep))
    print(markdown_table(timing))
    print("wrote", write_json("dynamic_exits", {"machine": machine(), "args": vars(a), "dense": base, "macs": macs,
                                               "history": history, "alone": rows, "sweep": sweep, "timing": timing}))


if __name__ == "__main__":
    main()
