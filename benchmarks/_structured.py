"""Shared plumbing of the structured-pruning benchmarks (issue 4): subset data, fine-tune, latency rows."""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from benchmarks.common import dataset, trained_baseline
from netcompress.export import ort_session, to_onnx
from netcompress.measure import analyze
from netcompress.measure.latency import compare_latency, ort_callable, set_threads
from netcompress.train import TrainConfig, Trainer, evaluate

FT = dict(batch_size=128, lr=0.01, optimizer="sgd", scheduler="cosine", weight_decay=5e-4)


def args(doc: str, default_models=("resnet56", "vgg_small"), methods=(), flags: dict | None = None,
         seeds: bool = False):
    p = argparse.ArgumentParser(description=doc)
    if seeds:
        p.add_argument("--seeds", type=int, default=1, help="fine-tune seeds per method (mean reported)")
        p.add_argument("--first-seed", type=int, default=0, help="seeds run from this one (to add seeds to a run)")
    for flag, help_ in (flags or {}).items():
        p.add_argument(flag, action="store_true", help=help_)
    if methods:
        p.add_argument("--methods", nargs="+", default=list(methods), choices=list(methods))
    p.add_argument("--models", nargs="+", default=list(default_models))
    p.add_argument("--n-train", type=int, default=6000, help="training subset (0 = full 55k); states the budget")
    p.add_argument("--n-test", type=int, default=0, help="test subset (0 = all 10k); states the budget")
    p.add_argument("--ft-epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def subset(n_train: int, n_test: int = 0):
    """Fashion-MNIST with seeded random subsets of the train and test splits (0 = all)."""
    splits = dataset("fashion_mnist")
    for part, n in (("train", n_train), ("test", n_test)):
        data = getattr(splits, part)
        if n and n < len(data):
            idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:n]
            x, y = data.tensors
            splits = dataclasses.replace(splits, **{part: TensorDataset(x[idx], y[idx])})
    return splits


def baseline(name: str, splits):
    return trained_baseline(name, splits)


def fine_tune(model, splits, epochs: int, seed: int = 0, callbacks=(), lr: float | None = None):
    if epochs > 0:
        cfg = TrainConfig(epochs=epochs, seed=seed, progress=False, **{**FT, **({"lr": lr} if lr else {})})
        Trainer(model, splits.train, cfg, callbacks=callbacks).fit()
    return evaluate(model, splits.test)


def costs(model, x1):
    t = analyze(model, x1).totals
    return {"params": t["params"], "macs": t["macs"]}


def latency_rows(models: dict, input_shape, repeats: int, threads: int = 1) -> dict:
    """Speed-ups over "dense" at batch 32 and 1: torch eager and onnxruntime, interleaved medians."""
    set_threads(threads)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for k, m in models.items():
            path = Path(tmp) / f"{k}.onnx"
            to_onnx(m.eval(), torch.randn(2, *input_shape), path)
            sessions[k] = ort_session(path, threads=threads)
        for batch in (32, 1):
            x = torch.randn(batch, *input_shape)
            # a batch-1 call lasts ~1 ms: 20 of them fit in one scheduler slice of a loaded machine, so
            # batch 1 gets 10x the repeats to spread over many slices
            n = repeats * (10 if batch == 1 else 1)
            eager = compare_latency(models, x, warmup=5, repeats=n, threads=threads)
            ort = compare_latency({k: ort_callable(s) for k, s in sessions.items()}, x, warmup=5, repeats=n,
                                  threads=threads)
            for k in models:
                out.setdefault(k, {})[f"eager_b{batch}_ms"] = eager[k].median_ms
                out[k][f"eager_b{batch}_speedup"] = eager["dense"].median_ms / eager[k].median_ms
                out[k][f"ort_b{batch}_ms"] = ort[k].median_ms
                out[k][f"ort_b{batch}_speedup"] = ort["dense"].median_ms / ort[k].median_ms
    return out
