"""Claim 4: a lottery ticket of LeNet-300-100 (Fashion-MNIST) with <= 10% of its weights, found by
iterative global magnitude pruning with rewinding, retrained, stays within 0.5 points of the dense
network trained the same way; the control (same mask, fresh random initial weights) is worse.

Every training (dense round 0, each IMP round, the control) uses the same schedule: ``--epochs``
epochs of SGD momentum 0.9, lr 0.05 cosine.

    python -m benchmarks.prune_lottery [--epochs 6] [--rounds 5] [--rewind 0 1]
"""
from __future__ import annotations

import torch

from benchmarks.common import dataset, machine, markdown_table, parser, start, write_json
from netcompress.models import create_model
from netcompress.prune import LotteryTicket, find_ticket, random_reinit, sparsity
from netcompress.train import TrainConfig, Trainer, evaluate


def main() -> None:
    ap = parser(__doc__, epochs=6)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--final", type=float, default=0.9)
    ap.add_argument("--rewind", type=int, nargs="+", default=[0])
    args = start(ap)
    splits = dataset("fashion_mnist")
    cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.05, optimizer="sgd", momentum=0.9,
                      scheduler="cosine", seed=0, progress=False)
    rows, histories = [], {}
    for k in args.rewind:
        torch.manual_seed(0)
        model = create_model("lenet_300_100")
        ticket, hist, _ = find_ticket(model, splits.train, cfg,
                                      LotteryTicket(final=args.final, rounds=args.rounds, rewind_epoch=k),
                                      test_data=splits.test)
        histories[k] = hist
        control = random_reinit(ticket, seed=1234)
        Trainer(control, splits.train, cfg).fit()
        dense = 100 * hist[0]["test_accuracy"]
        tick = 100 * hist[-1]["test_accuracy"]
        ctrl = 100 * evaluate(control, splits.test)["accuracy"]
        rows.append({"rewind_epoch": k, "weights_kept": 1 - sparsity(ticket), "dense_acc": dense,
                     "ticket_acc": tick, "ticket_minus_dense": tick - dense, "control_acc": ctrl,
                     "ticket_minus_control": tick - ctrl})
        print(rows[-1], flush=True)
    print(markdown_table(rows))
    for k, hist in histories.items():
        print(f"rewind to epoch {k}:")
        print(markdown_table(hist))
    write_json("prune_lottery", {"args": vars(args), "rows": rows, "histories": histories, "machine": machine()})


if __name__ == "__main__":
    main()
