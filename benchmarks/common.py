"""The one benchmark harness: the shared command line (:func:`parser`, :func:`start`), data subsets, dense
baselines, fine-tuning, interleaved latency (:func:`latency_rows`), tables (:func:`markdown_table`) and JSON
records (:func:`write_json`, with the machine header).

Baselines are cached by a hash of their full config in ``$NETCOMPRESS_CACHE`` (default
``~/.cache/netcompress``), never committed; every benchmark can also retrain them in the same run."""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from netcompress.core.io import load_weights_into, save_weights
from netcompress.data import Splits, load_dataset
from netcompress.export import ort_session, to_onnx
from netcompress.measure import analyze, compare_latency, ort_callable, set_threads
from netcompress.models import create_model
from netcompress.train import TrainConfig, Trainer, evaluate

OUT_DIR = Path(__file__).parent / "out"
CACHE_DIR = Path(os.environ.get("NETCOMPRESS_CACHE", Path.home() / ".cache" / "netcompress"))

# the short, seeded schedules every benchmark uses for its dense baselines
BASELINE_SCHEDULES = {
    "lenet_300_100": dict(epochs=12, batch_size=128, lr=0.05, optimizer="sgd", scheduler="cosine", weight_decay=1e-4),
    # LeNet-5 (Caffe, no ReLU after the convs) diverges at lr 0.05 with momentum 0.9: Caffe's own lr is 0.01
    "lenet5": dict(epochs=12, batch_size=128, lr=0.02, optimizer="sgd", scheduler="cosine", weight_decay=5e-4,
                   grad_clip=5.0),
    "resnet20": dict(epochs=6, batch_size=128, lr=0.1, optimizer="sgd", scheduler="cosine", weight_decay=5e-4),
    "resnet56": dict(epochs=6, batch_size=128, lr=0.1, optimizer="sgd", scheduler="cosine", weight_decay=5e-4),
    "vgg_small": dict(epochs=6, batch_size=128, lr=0.05, optimizer="sgd", scheduler="cosine", weight_decay=5e-4),
    "mlp_1200_1200": dict(epochs=12, batch_size=128, lr=0.05, optimizer="sgd", scheduler="cosine", weight_decay=0.0),
}


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = "unknown"
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu, "cores": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version(), "commit": commit}


def dataset(name: str = "fashion_mnist", seed: int = 0) -> Splits:
    return load_dataset(name, seed=seed)


def _key(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def trained_baseline(model_name: str, splits: Splits, seed: int = 0, retrain: bool = False, **overrides):
    """(model, test_metrics) of a dense baseline trained with the fixed schedule, cached by config hash."""
    schedule = {**BASELINE_SCHEDULES.get(model_name, BASELINE_SCHEDULES["lenet5"]), **overrides}
    c, h, _ = splits.input_shape
    model_kwargs = {"in_channels": c, "input_size": h, "num_classes": splits.num_classes}
    payload = {"model": model_name, "data": splits.name, "n_train": len(splits.train), "seed": seed,
               "schedule": schedule, "model_kwargs": model_kwargs, "v": 1}
    key = _key(payload)
    weights = CACHE_DIR / "baselines" / f"{model_name}-{key}.safetensors"
    torch.manual_seed(seed)
    model = create_model(model_name, **model_kwargs)
    if weights.is_file() and not retrain:
        load_weights_into(model, weights)
    else:
        Trainer(model, splits.train, TrainConfig(seed=seed, progress=False, **schedule), val_data=splits.val).fit()
        save_weights(model, weights, force=True)
        (weights.with_suffix(".json")).write_text(json.dumps(payload, indent=1))
    return model, evaluate(model, splits.test)


def continued_baseline(model_name: str, splits: Splits, epochs: int, lr: float, seed: int = 0):
    """(model, test_metrics): the cached dense baseline trained ``epochs`` more with a fresh cosine schedule from
    ``lr``, itself cached. Cheaper than a long run from scratch; used where a stronger teacher is needed."""
    base, _ = trained_baseline(model_name, splits, seed=seed)
    schedule = {**BASELINE_SCHEDULES[model_name], "epochs": epochs, "lr": lr}
    payload = {"continues": _key({"model": model_name, "data": splits.name, "n_train": len(splits.train),
                                  "seed": seed, "schedule": BASELINE_SCHEDULES[model_name]}),
               "model": model_name, "data": splits.name, "schedule": schedule, "v": 1}
    weights = CACHE_DIR / "baselines" / f"{model_name}-cont-{_key(payload)}.safetensors"
    if weights.is_file():
        load_weights_into(base, weights)
    else:
        Trainer(base, splits.train, TrainConfig(seed=seed + 1, progress=False, **schedule), val_data=splits.val).fit()
        save_weights(base, weights, force=True)
        weights.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    return base, evaluate(base, splits.test)


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    columns = columns or list(rows[0])
    fmt = lambda v: f"{v:,.4g}" if isinstance(v, float) else (f"{v:,}" if isinstance(v, int) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_json(name: str, payload: dict) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=1, default=str))
    return path


# ----- the shared command line: every benchmark names the common flags it takes, with its defaults
FLAGS = {
    "models": dict(nargs="+", help="zoo models to run"),
    "methods": dict(nargs="+", help="methods to run"),
    "n_train": dict(type=int, help="training subset (0 or none: the whole split); states the budget"),
    "n_test": dict(type=int, help="test subset (0 or none: the whole split)"),
    "epochs": dict(type=int, help="training epochs"),
    "ft_epochs": dict(type=int, help="fine-tuning epochs after compressing"),
    "seeds": dict(type=int, nargs="+", help="seeds to run (the mean is reported)"),
    "repeats": dict(type=int, help="timed calls per candidate, interleaved (medians)"),
    "threads": dict(type=int, help="torch threads (1 for latency: DESIGN.md section 5)"),
    "tag": dict(help="suffix of the JSON record's name"),
    "quick": dict(action="store_true", help="a smoke run with the smallest settings"),
}


def parser(doc: str | None, **defaults) -> argparse.ArgumentParser:
    """An ArgumentParser holding the shared flags named in ``defaults`` (``n_train=0, repeats=20``...), with
    those defaults; a benchmark adds its own flags to it, then calls :func:`start`."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in defaults.items():
        kw = dict(FLAGS[name])
        if kw.get("action") != "store_true":
            kw["default"] = default
        if name == "methods":
            kw["choices"] = list(default)
        p.add_argument("--" + name.replace("_", "-"), **kw)
    return p


def start(p: argparse.ArgumentParser, argv=None, level: int = logging.WARNING) -> argparse.Namespace:
    """Parse the command line, set up logging, and fix torch's threads (``--threads``, else 1)."""
    args = p.parse_args(argv)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s")
    set_threads(getattr(args, "threads", None) or 1)
    return args


# ----- data and training
def take(ds: TensorDataset, n: int | None, seed: int | None = 0) -> TensorDataset:
    """``n`` samples of ``ds``: a seeded random subset, or the first ``n`` with ``seed=None`` (0 or None, or
    ``n`` >= its length: all of it)."""
    x, y = ds.tensors
    if not n or n >= len(x):
        return ds
    idx = torch.arange(n) if seed is None else torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return TensorDataset(x[idx], y[idx])


def subset(splits: Splits, n_train: int | None = 0, n_test: int | None = 0, seed: int | None = 0) -> Splits:
    """``splits`` with its train and test splits cut by :func:`take`."""
    return dataclasses.replace(splits, train=take(splits.train, n_train, seed), test=take(splits.test, n_test, seed))


FT = dict(batch_size=128, lr=0.01, optimizer="sgd", scheduler="cosine", weight_decay=5e-4)


def fine_tune(model, splits: Splits, epochs: int, seed: int = 0, callbacks=(), **schedule) -> dict:
    """Train ``epochs`` on ``splits.train`` (``FT`` unless ``schedule`` overrides it); the test metrics after."""
    if epochs > 0:
        cfg = TrainConfig(epochs=epochs, seed=seed, progress=False, **{**FT, **schedule})
        Trainer(model, splits.train, cfg, callbacks=list(callbacks)).fit()
    return evaluate(model, splits.test)


def costs(model, x) -> dict:
    t = analyze(model, x).totals
    return {"params": t["params"], "macs": t["macs"]}


# ----- measurement
def latency_rows(models: dict, input_shape, repeats: int, threads: int = 1) -> dict:
    """Speed-ups over ``models["dense"]`` at batch 32 and 1: torch eager and onnxruntime, interleaved medians."""
    set_threads(threads)
    out: dict = {}
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
            runs = {"eager": compare_latency(models, x, warmup=5, repeats=n, threads=threads),
                    "ort": compare_latency({k: ort_callable(s) for k, s in sessions.items()}, x, warmup=5, repeats=n,
                                           threads=threads)}
            for k in models:
                for rt, stats in runs.items():
                    out.setdefault(k, {})[f"{rt}_b{batch}_ms"] = stats[k].median_ms
                    out[k][f"{rt}_b{batch}_speedup"] = stats["dense"].median_ms / stats[k].median_ms
    return out
