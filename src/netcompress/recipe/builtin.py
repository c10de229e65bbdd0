"""Built-in stages: fine-tune (the trainer), export (ONNX checked by onnxruntime, safetensors), and prune
through ``prune_`` with whatever pruning configs the pruning families registered."""
from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, Optional, Union

from pydantic import Field, field_validator
from torch.utils.data import TensorDataset

from ..core.registry import did_you_mean
from ..export.onnx import DEFAULT_OPSET
from ..train import Callback
from .registry import CALLBACKS, EXPORTERS, LOSSES, StageParams, config_stage_params, register_stage
from .schema import TrainSpec

log = logging.getLogger(__name__)

TypedSpec = Union[str, dict[str, Any]]


def check_factory_spec(spec: Any, registry, what: str) -> Any:
    """Validate ``name`` or ``{type: name, **kwargs}`` against a factory registry (name and kwarg names)."""
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, dict) and isinstance(spec.get("type"), str):
        name, kwargs = spec["type"], {k: v for k, v in spec.items() if k != "type"}
    else:
        raise ValueError(f"{what} must be a name or a mapping with a 'type' name; got {type(spec).__name__}")
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}.{did_you_mean(name, registry.names())} "
                         f"Allowed: {', '.join(registry.names()) or '(none registered yet)'}")
    factory = registry.get(name)
    params = list(inspect.signature(factory).parameters.values())[1:]  # skip ctx
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        names = [p.name for p in params]
        for key in kwargs:
            if key not in names:
                raise ValueError(f"{what} {name!r} has no option {key!r}.{did_you_mean(str(key), names)} "
                                 f"Allowed: {', '.join(names)}")
    check = getattr(factory, "check", None)
    if check is not None:  # the factory validates its options at load time (e.g. nested configs)
        check(**kwargs)
    return spec


def make_from_spec(spec: Any, registry, ctx) -> Any:
    if spec is None:
        return None
    name, kwargs = (spec, {}) if isinstance(spec, str) else (spec["type"], {k: v for k, v in spec.items() if k != "type"})
    return registry.get(name)(ctx, **kwargs)


# ------------------------------------------------------------------------------------- fine-tune

class FineTuneParams(TrainSpec):
    """Train the current model; ``loss`` replaces cross-entropy (e.g. distillation from the baseline),
    ``callbacks`` act inside the loop (gradual pruning, QAT, ...)."""

    loss: Optional[TypedSpec] = None
    callbacks: list[TypedSpec] = Field(default_factory=list, max_length=16)

    @field_validator("loss", mode="after")
    @classmethod
    def _loss(cls, v):
        return None if v is None else check_factory_spec(v, LOSSES, "loss")

    @field_validator("callbacks", mode="after")
    @classmethod
    def _callbacks(cls, v):
        return [check_factory_spec(s, CALLBACKS, "callback") for s in v]


class EpochLog(Callback):
    """Writes each epoch's metrics to metrics.jsonl (stateless, so resume is unaffected)."""

    def __init__(self, ctx, stage: str):
        self.ctx, self.stage = ctx, stage

    def on_epoch_end(self, trainer, epoch: int, metrics: dict) -> None:
        self.ctx.log_event("epoch", stage=self.stage, **{k: v for k, v in metrics.items()
                                                          if isinstance(v, (int, float, str)) or v is None})


def train_model(ctx, spec: TrainSpec, checkpoint_dir, seed: int, loss=None, callbacks=()) -> list:
    from ..train import Trainer

    cfg = spec.train_config(seed=seed, progress=ctx.progress)
    stage = ctx.stage.name if ctx.stage is not None else "baseline"
    trainer = Trainer(ctx.model, ctx.splits.train, cfg, val_data=ctx.splits.val, loss_fn=loss,
                      callbacks=[*callbacks, EpochLog(ctx, stage)], checkpoint_dir=checkpoint_dir,
                      resume=ctx.resume and (checkpoint_dir / "last.pt").exists(), overwrite=True)
    return trainer.fit()


def _rebuild_callbacks(ctx, params: FineTuneParams) -> None:
    """Resume: callbacks such as gradual pruning add structure (masks) when built; build them again."""
    for spec in params.callbacks:
        make_from_spec(spec, CALLBACKS, ctx)


@register_stage("fine-tune", FineTuneParams, restore=_rebuild_callbacks)
def run_fine_tune(ctx, params: FineTuneParams) -> None:
    """Fine-tune with the trainer (DDP under torchrun, checkpoint every epoch, resumable)."""
    loss = make_from_spec(params.loss, LOSSES, ctx)
    callbacks = [make_from_spec(s, CALLBACKS, ctx) for s in params.callbacks]
    train_model(ctx, params, ctx.stage_dir, ctx.recipe.seed + 1 + ctx.stage.index, loss, callbacks)


# ---------------------------------------------------------------------------------------- export

class ExportParams(StageParams):
    """Write deployable files into ``artifacts/``; the ``deploy`` format is what the final metrics measure."""

    formats: list[str] = Field(default_factory=lambda: ["onnx"], min_length=1, max_length=8)
    deploy: Optional[str] = None
    verify: bool = True
    opset: int = Field(DEFAULT_OPSET, ge=13, le=21)
    atol: float = Field(1e-4, gt=0, le=1)
    compact: bool = True  # ONNX files: short tensor names, no debug metadata (export.compact_onnx)

    @field_validator("formats", mode="after")
    @classmethod
    def _known(cls, v):
        for name in v:
            if name not in EXPORTERS:
                raise ValueError(f"unknown export format {name!r}.{did_you_mean(name, EXPORTERS.names())} "
                                 f"Allowed: {', '.join(EXPORTERS.names())}")
        if len(set(v)) != len(v):
            raise ValueError(f"export formats repeat: {v}")
        return v

    @field_validator("deploy", mode="after")
    @classmethod
    def _deploy(cls, v, info):
        if v is not None and v not in info.data.get("formats", []):
            raise ValueError(f"deploy {v!r} must be one of the formats {info.data.get('formats')}")
        return v


@register_stage("export", ExportParams)
def run_export(ctx, params: ExportParams) -> None:
    """Export the current model in each format (main process only) and record the artifacts."""
    if not ctx.is_main:
        return
    deploy = params.deploy or params.formats[0]
    for fmt in params.formats:
        for name, path in EXPORTERS.get(fmt)(ctx, params, ctx.artifacts_dir / "model").items():
            if params.compact and Path(path).suffix == ".onnx":
                from ..export import compact_onnx

                compact_onnx(path)
            ctx.add_artifact(name, path, deploy=(name == deploy))


@EXPORTERS.register("onnx")
def export_onnx(ctx, params, stem) -> dict:
    from ..export import to_onnx

    path = to_onnx(ctx.model, ctx.example_input, stem.with_suffix(".onnx"), verify=params.verify,
                   opset=params.opset, atol=params.atol, force=True)
    return {"onnx": path}


@EXPORTERS.register("safetensors")
def export_safetensors(ctx, params, stem) -> dict:
    from ..core.io import save_weights

    return {"safetensors": save_weights(ctx.model, stem.with_suffix(".safetensors"), force=True)}


# ----------------------------------------------------------------------------------------- prune

def prune_config_types() -> dict[str, type]:
    from ..prune.api import PRUNE_TRANSFORMS

    return {t.__name__: t for t in PRUNE_TRANSFORMS.config_types()}


def _prune_vocab():
    from .families import prune_vocab  # families imports this module: resolved at first use

    return prune_vocab


PruneParams = config_stage_params(
    "PruneParams", "pruning config", prune_config_types, _prune_vocab,
    "One ``prune_(model, config, data)`` call; ``config: {type: <pruning config>, field: value}``.")


def _calibration_data(ctx, n: Optional[int]) -> TensorDataset:
    n = n or ctx.recipe.data.calibration
    return TensorDataset(*(t[:n] for t in ctx.splits.train.tensors))  # (inputs, targets)


def _apply_prune(ctx, params: PruneParams) -> None:
    from ..prune import prune_

    prune_(ctx.model, params.config, data=_calibration_data(ctx, params.calibration))


@register_stage("prune", PruneParams, restore=_apply_prune)
def run_prune(ctx, params: PruneParams) -> None:
    """Prune in place with a registered pruning config (fine-tune afterwards in a fine-tune stage)."""
    _apply_prune(ctx, params)


# ----------------------------------------------------------------------------------- sensitivity

class SensitivityParams(StageParams):
    """Measure only: accuracy on the validation split when each Conv2d/Linear alone is magnitude-pruned
    to each level; the curves go into the report. The model is left unchanged."""

    levels: list[float] = Field(default_factory=lambda: [0.5, 0.7, 0.9], min_length=1, max_length=20)
    samples: int = Field(1000, ge=1, le=100_000)

    @field_validator("levels", mode="after")
    @classmethod
    def _range(cls, v):
        if any(not 0 <= x < 1 for x in v):
            raise ValueError(f"levels must be in [0, 1); got {v}")
        return v


@register_stage("sensitivity", SensitivityParams)
def run_sensitivity(ctx, params: SensitivityParams) -> None:
    """Per-layer sensitivity curves for the report (no change to the model)."""
    from ..prune.sensitivity import curves, sensitivity_analysis

    if not ctx.is_main:
        return
    val = ctx.splits.val
    data = TensorDataset(*(t[:params.samples] for t in val.tensors))
    rows = sensitivity_analysis(ctx.model, data, [lv for lv in params.levels if lv > 0])
    ctx.record("sensitivity", {k: [list(p) for p in v] for k, v in curves(rows, params.levels).items()})
