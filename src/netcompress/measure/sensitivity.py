"""Per-layer sensitivity: accuracy when one layer alone is magnitude-pruned to each level.

A quick measurement for choosing per-layer levels; the pruning families may supply richer criteria.
The model is restored exactly after every probe."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..core.errors import ConfigError
from ..core.io import atomic_write, ensure_writable


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


@torch.no_grad()
def layer_sensitivity(model: nn.Module, data, levels: Sequence[float]) -> dict[str, list[tuple[float, float]]]:
    """{layer: [(level, accuracy), ...]}, pruning the smallest-|w| fraction ``level`` of that layer only."""
    from ..train import evaluate

    if not levels or any(not 0 <= lv < 1 for lv in levels):
        raise ConfigError(f"sensitivity levels must be in [0, 1); got {list(levels)}")
    curves = {}
    for name, layer in prunable_layers(model).items():
        original = layer.weight.detach().clone()
        points = []
        try:
            for level in levels:
                k = int(level * original.numel())
                w = original.clone()
                if k:
                    cut = original.abs().flatten().kthvalue(k).values
                    w[original.abs() <= cut] = 0
                layer.weight.copy_(w)
                points.append((float(level), evaluate(model, data)["accuracy"]))
        finally:
            layer.weight.copy_(original)
        curves[name] = points
    return curves


def write_sensitivity(curves: dict, stem: str | Path, force: bool = False) -> list[Path]:
    """STEM.csv (layer, level, accuracy) and STEM.png (one curve per layer)."""
    from .report import _sensitivity, base64

    stem = Path(stem)
    csv_path = ensure_writable(stem.with_suffix(".csv"), force)
    png_path = ensure_writable(stem.with_suffix(".png"), force)

    def write_csv(p: Path):
        with open(p, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["layer", "level", "accuracy"])
            for name, pts in curves.items():
                w.writerows([name, lv, acc] for lv, acc in pts)

    atomic_write(csv_path, write_csv)
    png = base64.b64decode(_sensitivity({"records": {"cli": {"sensitivity": curves}}}))
    atomic_write(png_path, lambda p: p.write_bytes(png))
    return [csv_path, png_path]
