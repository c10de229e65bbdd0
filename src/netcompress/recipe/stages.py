"""The recipe's stages: one per verb (derived from ``core.verbs.VERBS``), and fine-tune, export, sensitivity.

A verb stage is ``{type: <verb stage>, config: {type: <a config of that verb>, ...}, calibration: N}``: the
config resolves among the configs registered with the verb, so every technique a family registers is usable
here with no edit. ``calibration`` is how many training samples the verb may look at (default: the recipe's
``data.calibration``); configs that train (``trains = True``, e.g. LotteryTicket) get the whole training split.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
from dataclasses import dataclass, field
from typing import Annotated, Optional

from torch.utils.data import TensorDataset

from ..core.config import Config, Fraction, Interval, PositiveInt
from ..core.errors import ConfigError
from ..core.registry import did_you_mean
from ..core.verbs import VERBS, Verb
from ..export.formats import FORMATS, ExportOptions, write_format
from ..train import Callback, CallbackConfig, TrainConfig
from .registry import STAGES, register_stage

log = logging.getLogger(__name__)

# the families whose verbs become stages (importing them registers their configs and verbs)
FAMILIES = ("prune", "quantize", "lowrank", "arch", "dynamic", "distill")
for _family in FAMILIES:
    importlib.import_module(f"netcompress.{_family}")


def calibration_data(ctx, n: Optional[int] = None) -> TensorDataset:
    """The first ``n`` training samples (default: the recipe's ``data.calibration``) as ``(inputs, targets)``."""
    n = n or ctx.recipe.data.calibration
    return TensorDataset(*(t[:n] for t in ctx.splits.train.tensors))


# ------------------------------------------------------------------------------------- verb stages

def _verb_stage(verb: Verb) -> None:
    def validate(self):
        verb.transform(self.config)  # a config of the right base that no transform handles fails at load

    params = dataclasses.make_dataclass(
        f"{verb.stage.title()}Stage",
        [("config", verb.base), ("calibration", Optional[PositiveInt], field(default=None))],
        bases=(Config,), frozen=True, namespace={"validate": validate, "__module__": __name__,
                                                 "__doc__": f"Stage ``{verb.stage}``: {verb.doc}"})

    def apply(ctx, p) -> None:
        data = ctx.splits.train if getattr(p.config, "trains", False) else calibration_data(ctx, p.calibration)
        report = verb(ctx.model, p.config, data=data)
        ctx.model = report.model
        if ctx.is_main and ctx.stage is not None:
            ctx.record("changes", report.to_dict())
            if "bits" in report.details:
                ctx.record("bit_widths", dict(report.details["bits"]))
            if "factored" in report.details:
                ctx.record("factored", {r.name: {"kind": r.kind, "ranks": list(r.ranks), "params_before":
                                                 r.params_before, "params_after": r.params_after}
                                        for r in report.details["factored"]})

    apply.__doc__ = verb.doc
    register_stage(verb.stage, params, restore=apply)(apply)


for _verb in VERBS:
    _verb_stage(VERBS.get(_verb))


# --------------------------------------------------------------------------------------- fine-tune

@dataclass(frozen=True)
class FineTune(TrainConfig):
    """Train the current model with the trainer's settings (:class:`~netcompress.train.TrainConfig`'s fields and
    defaults); ``callbacks`` act inside the loop: ``Distill`` (from the run's baseline), ``GradualPrune``,
    ``ExitTraining``, ... The stage's seed derives from the recipe's ``seed``."""

    callbacks: tuple[CallbackConfig, ...] = ()


class EpochLog(Callback):
    """Writes each epoch's metrics to metrics.jsonl (stateless, so resume is unaffected)."""

    def __init__(self, ctx, stage: str):
        self.ctx, self.stage = ctx, stage

    def on_epoch_end(self, trainer, epoch: int, metrics: dict) -> None:
        self.ctx.log_event("epoch", stage=self.stage, **{k: v for k, v in metrics.items()
                                                          if isinstance(v, (int, float, str)) or v is None})


def train_model(ctx, cfg: TrainConfig, checkpoint_dir, seed: int, callbacks=()) -> list:
    from ..train import Trainer

    cfg = dataclasses.replace(cfg, seed=seed, progress=ctx.progress)
    stage = ctx.stage.name if ctx.stage is not None else "baseline"
    trainer = Trainer(ctx.model, ctx.splits.train, cfg, val_data=ctx.splits.val,
                      callbacks=[*callbacks, EpochLog(ctx, stage)], checkpoint_dir=checkpoint_dir,
                      resume=ctx.resume and (checkpoint_dir / "last.pt").exists(), overwrite=True)
    return trainer.fit()


def _callbacks(ctx, params: FineTune) -> list:
    x = ctx.calibration(min(64, ctx.recipe.data.calibration))
    return [cb.build(ctx.model, teacher=ctx.teacher, data=calibration_data(ctx), example_inputs=x)
            for cb in params.callbacks]


@register_stage("fine-tune", FineTune, restore=_callbacks)
def run_fine_tune(ctx, params: FineTune) -> None:
    """Fine-tune with the trainer (DDP under torchrun, checkpoint every epoch, resumable)."""
    train_model(ctx, params, ctx.stage_dir, ctx.recipe.seed + 1 + ctx.stage.index, _callbacks(ctx, params))


# ------------------------------------------------------------------------------------------ export

@dataclass(frozen=True)
class Export(ExportOptions):
    """Write deployable files into ``artifacts/`` in each of ``formats``; the ``deploy`` format (default: the
    first) is what the final metrics measure."""

    formats: tuple[str, ...] = ("onnx",)
    deploy: Optional[str] = None

    def validate(self):
        where = self.path("formats")
        if not self.formats or len(self.formats) > 8:
            raise ConfigError(f"{where} needs 1 to 8 formats; got {list(self.formats)}")
        for name in self.formats:
            if name not in FORMATS:
                raise ConfigError(f"{where}: unknown export format {name!r}.{did_you_mean(name, FORMATS.names())} "
                                  f"Allowed: {', '.join(FORMATS.names())}")
        if len(set(self.formats)) != len(self.formats):
            raise ConfigError(f"{where} repeat: {list(self.formats)}")
        if self.deploy is not None and self.deploy not in self.formats:
            raise ConfigError(f"{self.path('deploy')} {self.deploy!r} must be one of the formats {list(self.formats)}")


@register_stage("export", Export)
def run_export(ctx, params: Export) -> None:
    """Export the current model in each format (main process only) and record the artifacts."""
    if not ctx.is_main:
        return
    deploy = params.deploy or params.formats[0]
    for name in params.formats:
        path = write_format(name, ctx.model, ctx.artifacts_dir / "model", example_inputs=ctx.example_input,
                            data=calibration_data(ctx), options=params)
        bits = FORMATS.get(name).weight_bits
        if bits is not None and "bit_widths" not in ctx.state.get("records", {}).get(ctx.stage.name, {}):
            from ..quantize.fake import quantizable_layers

            ctx.record("bit_widths", {n: bits for n, _ in quantizable_layers(ctx.model)})
        ctx.add_artifact(name, path, deploy=(name == deploy))


# ------------------------------------------------------------------------------------- sensitivity

@dataclass(frozen=True)
class Sensitivity(Config):
    """Measure only: accuracy on ``samples`` validation images when each Conv2d/Linear alone is magnitude-pruned
    to each of ``levels``; the curves go into the report. The model is left unchanged."""

    levels: tuple[Fraction, ...] = (0.5, 0.7, 0.9)
    samples: Annotated[int, Interval(1, 100_000)] = 1000

    def validate(self):
        if not self.levels or len(self.levels) > 20:
            raise ConfigError(f"{self.path('levels')} needs 1 to 20 levels; got {list(self.levels)}")


@register_stage("sensitivity", Sensitivity)
def run_sensitivity(ctx, params: Sensitivity) -> None:
    """Per-layer sensitivity curves for the report (no change to the model)."""
    from ..prune.sensitivity import curves, sensitivity_analysis

    if not ctx.is_main:
        return
    data = TensorDataset(*(t[:params.samples] for t in ctx.splits.val.tensors))
    rows = sensitivity_analysis(ctx.model, data, [lv for lv in params.levels if lv > 0])
    ctx.record("sensitivity", {k: [list(p) for p in v] for k, v in curves(rows, params.levels).items()})


__all__ = ["Export", "FineTune", "Sensitivity", "STAGES", "calibration_data", "train_model"]
