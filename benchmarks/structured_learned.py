"""Claim 5 of issue 4: network slimming and learnable channel gates reach 2x fewer MACs with no per-layer
ratios; "Rethinking the Value of Network Pruning" controls in the same table: the pruned architecture
trained from scratch with the baseline's epochs (Scratch-E) and with the baseline's compute (Scratch-B).

    python -m benchmarks.structured_learned --models vgg_small --n-train 6000 --ft-epochs 3
"""
from __future__ import annotations

import copy
import time

import torch

from benchmarks.common import (BASELINE_SCHEDULES, FT, costs, dataset, fine_tune, machine, markdown_table, parser, start,
                               subset, trained_baseline, write_json)
from netcompress.models import create_model
from netcompress.graph import PrunePlan
from netcompress.prune.structured import BNScale, ChannelPruning, Global, MACs, prune_channels
from netcompress.prune.structured.learned import ChannelGates, SlimmingPenalty
from netcompress.train import TrainConfig, Trainer, evaluate


def main():
    p = parser(__doc__, models=["vgg_small"], methods=["slimming", "gates"], n_train=6000, n_test=0, ft_epochs=3,
               threads=1)
    a = start(p)
    splits = subset(dataset(), a.n_train, a.n_test)
    shape = splits.input_shape
    x1, x2 = torch.randn(1, *shape), torch.randn(2, *shape)
    rows, payload = [], {"args": vars(a), "models": {}}
    for name in a.models:
        t0 = time.time()
        dense, dense_test = trained_baseline(name, splits)
        dense_macs = costs(dense, x1)["macs"]
        base_epochs = BASELINE_SCHEDULES[name]["epochs"]
        entry = {}

        def row(method, model, acc, sparsify_epochs, ft_epochs, note=""):
            c = costs(model, x1)
            r = {"model": name, "method": method, "MACs": c["macs"], "MAC ratio": dense_macs / c["macs"],
                 "params": c["params"], "epochs (sparsify + FT)": f"{sparsify_epochs} + {ft_epochs}",
                 "acc": f"{acc * 100:.2f}", "drop (pts)": f"{(dense_test['accuracy'] - acc) * 100:.2f}", "note": note}
            rows.append(r)
            entry[method] = r
            print(markdown_table([r]), flush=True)

        row("dense", dense, dense_test["accuracy"], base_epochs, 0)
        cfg = TrainConfig(epochs=a.ft_epochs, seed=0, progress=False, **FT)
        if "slimming" in a.methods:
            r_slim = slimming(a, dense, splits, cfg, x2, row)
            scratch(name, r_slim, splits, row, base_epochs)
        if "gates" in a.methods:
            gates_row(a, dense, splits, cfg, x2, row)
        payload["models"][name] = {"rows": entry, "seconds": time.time() - t0}
    payload["rows"] = rows
    print(f"\nmachine: {machine()}\n")
    print(markdown_table(rows))
    suffix = "" if set(a.methods) == {"slimming", "gates"} else "_" + "_".join(a.methods)
    write_json("structured_learned" + suffix, payload)


def slimming(a, dense, splits, cfg, x2, row):
    """Network slimming: L1 on BN scales while training on from the baseline, then global BN-scale pruning."""
    slim = copy.deepcopy(dense)
    Trainer(slim, splits.train, cfg, callbacks=[SlimmingPenalty(1e-4)]).fit()
    r_slim = prune_channels(slim, ChannelPruning(budget=MACs(0.5), importance=BNScale(), scope=Global()), x2)
    one = evaluate(slim, splits.test)["accuracy"]
    acc = fine_tune(slim, splits, a.ft_epochs)["accuracy"]
    row("network slimming (L1 on gamma 1e-4, global BN scale)", slim, acc, a.ft_epochs, a.ft_epochs,
        f"one-shot {one * 100:.2f}")
    return r_slim


def gates_row(a, dense, splits, cfg, x2, row):
    """Learnable gates: straight-through binary masks with a MACs penalty, then prune by gate logits."""
    gated = copy.deepcopy(dense)
    gates = ChannelGates(gated, x2, target=MACs(0.5))
    Trainer(gated, splits.train, cfg, callbacks=[gates]).fit()
    hard = float(gates.expected_macs(hard=True).detach())
    prune_channels(gated, ChannelPruning(budget=MACs(0.5), importance=gates.importance(), scope=Global()), x2)
    one = evaluate(gated, splits.test)["accuracy"]
    acc = fine_tune(gated, splits, a.ft_epochs)["accuracy"]
    row("learnable gates (STE, MACs penalty)", gated, acc, a.ft_epochs, a.ft_epochs,
        f"gates alone kept {hard:.3f} of MACs; one-shot {one * 100:.2f}")


def scratch(name, r_slim, splits, row, base_epochs):
    """Rethinking controls on the slimming architecture: fresh init, trained from scratch."""
    shape = splits.input_shape
    for label, epochs in (("Scratch-E", base_epochs),
                          ("Scratch-B", max(base_epochs, round(base_epochs * r_slim.mac_ratio)))):
        torch.manual_seed(1)
        model = create_model(name, in_channels=shape[0], input_size=shape[1], num_classes=splits.num_classes)
        PrunePlan.from_dict(r_slim.plan.to_dict()).apply(model)
        for m in model.modules():  # re-initialise: the plan kept the dense init's slices
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        Trainer(model, splits.train, TrainConfig(seed=1, progress=False, **{**BASELINE_SCHEDULES[name],
                                                                             "epochs": epochs})).fit()
        acc = evaluate(model, splits.test)["accuracy"]
        row(f"{label} (slimming architecture, from scratch)", model, acc, 0, epochs,
            "same epochs as dense" if label == "Scratch-E" else "same compute as dense")


if __name__ == "__main__":
    main()
