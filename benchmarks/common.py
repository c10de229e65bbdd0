"""Shared benchmark plumbing: the machine header, cached dense baselines, tables and JSON output.

Baselines are cached by a hash of their full config in ``$NETCOMPRESS_CACHE`` (default
``~/.cache/netcompress``), never committed; every benchmark can also retrain them in the same run."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from netcompress.core.io import load_weights_into, save_weights
from netcompress.data import Splits, load_dataset
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
