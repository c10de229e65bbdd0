"""Helpers shared by the distillation benchmarks: seeded runs, cached teachers, data subsets, jitter."""
from __future__ import annotations

import json
import logging
import os
import time

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from benchmarks.common import CACHE_DIR, _key, dataset, start, take
from netcompress.core.io import load_weights_into, save_weights
from netcompress.train import TrainConfig, Trainer, evaluate

log = logging.getLogger("benchmarks.distill")


class Jitter(Dataset):
    """Random translation of each image by up to ``pixels`` in x and y (Hinton's teacher augmentation);
    the uncovered border gets the background value (the image minimum)."""

    def __init__(self, base: TensorDataset, pixels: int = 2):
        self.x, self.y = base.tensors
        self.pixels = pixels
        self.background = float(self.x.min())

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        p = self.pixels
        dx, dy = torch.randint(-p, p + 1, (2,)).tolist()
        img = F.pad(self.x[i], (p, p, p, p), value=self.background)  # (C, H+2p, W+2p)
        h, w = self.x.shape[-2:]
        return img[:, p + dy:p + dy + h, p + dx:p + dx + w], self.y[i]


def setup(p, argv=None):
    """Shared start of the distillation benchmarks: the command line (INFO logging, 1 thread), the data and the
    zoo's model kwargs for it."""
    args = start(p, argv, level=logging.INFO)
    splits = dataset()
    c, h, _ = splits.input_shape
    return args, splits, dict(in_channels=c, input_size=h, num_classes=splits.num_classes)


subset = take  # a seeded random subset of n samples (the whole set when n >= len)


def cached_teacher(tag: str, build, train_data, config: TrainConfig, payload: dict, val_data=None):
    """Train ``build()`` once with ``config`` and cache the weights by a hash of everything that matters."""
    key = _key({"tag": tag, "config": config.to_dict(), **payload, "v": 1})
    path = CACHE_DIR / "distill" / f"{tag}-{key}.safetensors"
    model = build()
    lock = path.with_suffix(".lock")
    while lock.exists() and not path.is_file():  # another benchmark process is training this teacher
        time.sleep(10)
    if path.is_file():
        load_weights_into(model, path)
        log.info("teacher %s loaded from %s", tag, path)
        return model, 0.0
    start = time.time()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(str(os.getpid()))
    try:
        Trainer(model, train_data, config, val_data=val_data).fit()
        save_weights(model, path, force=True)
    finally:
        lock.unlink(missing_ok=True)
    path.with_suffix(".json").write_text(json.dumps({"tag": tag, "config": config.to_dict(), **payload}, indent=1))
    return model, time.time() - start


def run(model, train_data, config: TrainConfig, test_data, callbacks=(), optimizer=None) -> dict:
    """Train, then test: accuracy, error count and wall time."""
    start = time.time()
    Trainer(model, train_data, config, callbacks=list(callbacks), optimizer=optimizer).fit()
    seconds = time.time() - start
    res = evaluate(model, test_data)
    errors = int(round((1 - res["accuracy"]) * res["n"]))
    return {"test_acc_%": 100 * res["accuracy"], "test_errors": errors, "train_s": seconds}


# The ResNet-56 teacher: the 6-epoch full-data baseline (91.89%, below ResNet-20's 93.18%) trained 8 epochs more
# with a fresh cosine schedule from lr 0.05 (benchmarks.common.continued_baseline).
TEACHER_MORE_EPOCHS, TEACHER_LR = 8, 0.05


def resnet56_teacher(splits):
    """(model, description) of the continued ResNet-56 teacher shared by the distillation benchmarks."""
    from benchmarks.common import BASELINE_SCHEDULES, continued_baseline

    model, _ = continued_baseline("resnet56", splits, epochs=TEACHER_MORE_EPOCHS, lr=TEACHER_LR)
    base = BASELINE_SCHEDULES["resnet56"]["epochs"]
    return model, f"{len(splits.train)} imgs x ({base} + {TEACHER_MORE_EPOCHS} continued) ep"

