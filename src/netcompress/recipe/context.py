"""What a stage runner sees: the model, the data, the run directory, the baseline (as a teacher), budgets."""
from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ..core.errors import ConfigError, ModelError
from ..core.io import atomic_write
from .schema import DataSpec, ModelSpec, Recipe

log = logging.getLogger(__name__)

TRUSTED_ROOTS = ("netcompress",)


def load_splits(spec: DataSpec, base_dir: Optional[Path] = None):
    """The recipe's data, with optional train/eval subsets (first N of each seeded split); a relative
    ``data_dir`` is resolved against ``base_dir`` (the recipe file's folder)."""
    from ..data import default_dataset, load_dataset

    data_dir = resolve_path(spec.data_dir, base_dir) if spec.data_dir else None
    if spec.name == "auto":
        splits = default_dataset(data_dir, seed=spec.seed, image_size=spec.image_size)
    else:
        kw: dict[str, Any] = {"seed": spec.seed}
        if data_dir is not None:
            kw["data_dir"] = data_dir
        if spec.name == "digits":
            kw["image_size"] = spec.image_size
        splits = load_dataset(spec.name, **kw)

    def cut(ds: TensorDataset, n: Optional[int]) -> TensorDataset:
        return ds if n is None or n >= len(ds) else TensorDataset(*(t[:n] for t in ds.tensors))

    return dataclasses.replace(splits, train=cut(splits.train, spec.train_subset), val=cut(splits.val, spec.eval_subset),
                               test=cut(splits.test, spec.eval_subset))


def check_trusted(spec: ModelSpec, trusted: tuple[str, ...] = ()) -> None:
    """Refuse a ``model.factory`` outside the trusted packages before anything is imported or written."""
    if spec.factory is None:
        return
    root = spec.factory.split(":")[0].split(".")[0]
    allowed = TRUSTED_ROOTS + tuple(trusted)
    if root not in allowed:
        raise ConfigError(f"model.factory {spec.factory!r}: package {root!r} is not trusted, so it is not imported "
                          f"(importing runs its code). If you trust it, pass --trust {root} "
                          f"(trusted=('{root}',) in Python). Trusted now: {', '.join(allowed)}")


def resolve_factory(spec: ModelSpec, trusted: tuple[str, ...] = ()):
    """The callable ``model.factory`` names, checked before it is called: its package must be trusted, and it
    must be an ``nn.Module`` class or a function marked with :func:`netcompress.models.model_builder`. Any other
    callable (netcompress's CLI and I/O functions, ``os.system``, ``subprocess.Popen``...) is refused,
    whatever ``trusted`` says. None for a zoo model (``name``)."""
    from ..models.builder import is_model_builder

    if spec.factory is None:
        return None
    check_trusted(spec, trusted)
    module_name, attr = spec.factory.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"model.factory {spec.factory!r}: cannot import {module_name!r} ({exc})") from None
    except Exception as exc:  # a trusted package failing at import
        raise ConfigError(f"model.factory {spec.factory!r}: importing {module_name!r} failed "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise ConfigError(f"model.factory {spec.factory!r}: {module_name} has no {attr!r}")
    if not is_model_builder(obj):
        raise ConfigError(f"model.factory {spec.factory!r} is not a model builder (an nn.Module class or a function "
                          "marked @netcompress.models.model_builder), so a recipe may not call it; name a zoo model "
                          "with model.name, or mark your own builder function")
    return obj


def _zoo_model(name: str, kwargs: dict) -> nn.Module:
    """A zoo model, first built on the meta device (no memory) to refuse sizes that do not fit."""
    from ..core.limits import check_memory
    from ..models import create_model

    with torch.device("meta"):
        meta = create_model(name, **kwargs)
    nbytes = sum(t.numel() * t.element_size() for t in list(meta.parameters()) + list(meta.buffers()))
    check_memory(nbytes, f"model {name!r} with {kwargs}", "choose smaller options (input size, widths)")
    return create_model(name, **kwargs)


def build_model(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int,
                trusted: tuple[str, ...] = (), base_dir: Optional[Path] = None) -> nn.Module:
    """The recipe's model, untrained or with ``weights`` loaded (paths relative to the recipe's folder)."""
    from ..core.io import load_weights_into

    if spec.name is not None:
        c, h = input_shape[0], input_shape[1]
        model = _zoo_model(spec.name, {"in_channels": c, "num_classes": num_classes, "input_size": h, **spec.kwargs})
    else:
        factory = resolve_factory(spec, trusted)
        try:
            model = factory(**spec.kwargs)
        except TypeError as exc:
            raise ModelError(f"model.factory {spec.factory!r} rejects kwargs {sorted(spec.kwargs)}: {exc}") from None
        if not isinstance(model, nn.Module):
            raise ModelError(f"model.factory {spec.factory!r} returned {type(model).__name__}, not an nn.Module")
    if spec.weights:
        load_weights_into(model, resolve_path(spec.weights, base_dir))
    return model


def resolve_path(path: str | Path, base_dir: Optional[Path]) -> Path:
    """A recipe's file path: ``~`` expanded, relative paths taken from the recipe file's folder."""
    path = Path(path).expanduser()
    return path if path.is_absolute() or base_dir is None else base_dir / path


@dataclass
class RunContext:
    """Shared state of one run. Stage runners read and mutate ``model`` (or assign a new one)."""

    recipe: Recipe
    run_dir: Path
    model: nn.Module
    splits: Any
    example_input: torch.Tensor  # (1, C, H, W)
    resume: bool = False
    is_main: bool = True
    progress: bool = True
    trusted: tuple = ()
    base_dir: Optional[Path] = None
    stage: Any = None
    state: dict = field(default_factory=dict)  # persisted in run.json: artifacts, per-stage records

    # -------------------------------------------------------------------------------- paths
    @property
    def stage_dir(self) -> Path:
        """Scratch/checkpoint folder of the current stage (inside the run directory)."""
        path = self.run_dir / "checkpoints" / (self.stage.name if self.stage is not None else "baseline")
        if self.is_main:
            path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def artifacts_dir(self) -> Path:
        path = self.run_dir / "artifacts"
        if self.is_main:
            path.mkdir(parents=True, exist_ok=True)
        return path

    def add_artifact(self, name: str, path: Path, deploy: bool = False) -> None:
        """Record an output file; ``deploy=True`` marks it as the final deployable model."""
        path = Path(path)
        try:
            path.resolve().relative_to(self.run_dir.resolve())
        except ValueError:
            raise ConfigError(f"artifact {path} is outside the run directory {self.run_dir}") from None
        self.state.setdefault("artifacts", {})[name] = str(path.relative_to(self.run_dir))
        if deploy:
            self.state["deploy"] = name

    def artifact(self, name: str) -> Optional[Path]:
        rel = self.state.get("artifacts", {}).get(name)
        return self.run_dir / rel if rel else None

    def record(self, key: str, value: Any) -> None:
        """Per-stage facts for the report (e.g. per-layer bit widths): JSON-able values only."""
        json.dumps(value)  # fail here, not when run.json is written
        self.state.setdefault("records", {}).setdefault(self.stage.name if self.stage else "baseline", {})[key] = value

    # -------------------------------------------------------------------------------- helpers
    def calibration(self, n: Optional[int] = None) -> torch.Tensor:
        return self.splits.calibration(n or self.recipe.data.calibration)

    def build_fresh(self) -> nn.Module:
        """A fresh copy of the recipe's model architecture (no weights loaded)."""
        spec = self.recipe.model.model_copy(update={"weights": None})
        return build_model(spec, self.splits.input_shape, self.splits.num_classes, self.trusted, self.base_dir)

    def teacher(self) -> nn.Module:
        """The dense baseline, frozen, in eval mode: the default teacher for distillation."""
        cached = self.__dict__.get("_teacher")
        if cached is None:
            from ..core.io import load_weights_into

            cached = load_weights_into(self.build_fresh(), self.run_dir / "checkpoints" / "baseline.safetensors")
            cached.eval().requires_grad_(False)
            self.__dict__["_teacher"] = cached
        return cached

    def log_event(self, event: str, **fields: Any) -> None:
        """Append one JSON line to metrics.jsonl (main process only)."""
        if not self.is_main:
            return
        line = json.dumps({"time": round(time.time(), 3), "event": event, **fields}, default=float)
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def save_state(self) -> None:
        if self.is_main:
            text = json.dumps(self.state, indent=1, sort_keys=True)
            atomic_write(self.run_dir / "run.json", lambda p: p.write_text(text))

    def copy_model(self) -> nn.Module:
        return copy.deepcopy(self.model)
