"""Recipe wiring of the technique families: their config names, nested vocabularies, callbacks and
export formats. Each block registers only if its family is installed in this build.

Nested names resolve in the namespace of the config that holds them, so the unstructured ``Global``
scope and the structured ``Global`` scope never clash."""
from __future__ import annotations

import logging
from typing import Any, Optional


from .builtin import _calibration_data
from .registry import CALLBACKS, EXPORTERS, STAGES, typed_field, config_stage_params, register_stage

log = logging.getLogger(__name__)


def _names(*classes) -> dict[str, type]:
    return {c.__name__: c for c in classes}


# ---------------------------------------------------------------------------------- vocabularies

def prune_vocab(config_type: type) -> dict[str, type]:
    """The nested names allowed inside a pruning config of ``config_type``."""
    if config_type.__module__.startswith("netcompress.prune.structured"):
        from ..prune import structured as s

        return _names(s.L1, s.L2, s.Taylor, s.BNScale, s.Random, s.Local, s.Global, s.LatencyAware, s.Params,
                      s.MACs, s.Latency)
    import netcompress.prune as p

    return _names(p.Elementwise, p.Global, p.Layerwise, p.Neurons, p.NM, p.Magnitude, p.Random, p.SNIP, p.GraSP,
                  p.APoZ, p.OBD, p.OBS, p.AGP, p.OneShot)


def quantize_types() -> dict[str, type]:
    from ..quantize.api import QUANTIZE_TRANSFORMS

    return {t.__name__: t for t in QUANTIZE_TRANSFORMS.config_types()}


def quantize_vocab() -> dict[str, type]:
    import netcompress.quantize as q

    return _names(q.PerChannel, q.PerTensor, q.QuantSpec, q.MinMax, q.MSE, q.Percentile, q.MovingAverage)


def distill_vocab() -> dict[str, type]:
    import netcompress.distill as d

    return _names(d.KD, d.LogitRegression, d.Hint, d.AttentionTransfer, d.FSP)


# ------------------------------------------------------------------------------------- quantize

QuantizeParams = config_stage_params(
    "QuantizeParams", "quantization config", quantize_types, quantize_vocab,
    "One ``quantize_(model, config, data)`` call: PTQ, QAT (then fine-tune), Binary, Ternary, Clustered, ...")


def _weight_bits(model, default: int, by_layer=()) -> dict[str, int]:
    """{layer: weight bits} of the Conv2d/Linear layers, for the report's bit-width bars."""
    from torch import nn

    overrides = dict(by_layer)
    return {name: int(overrides.get(name, default)) for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}


def _apply_quantize(ctx, params: QuantizeParams) -> None:
    from ..quantize import quantize_

    quantize_(ctx.model, params.config, data=_calibration_data(ctx, params.calibration))
    cfg = params.config
    bits = getattr(cfg, "bits", None) or getattr(getattr(cfg, "weight", None), "bits", None)
    if isinstance(bits, int) and ctx.is_main:
        ctx.record("bit_widths", _weight_bits(ctx.model, bits, getattr(cfg, "bits_by_layer", ())))


def _install_quantize() -> None:
    import netcompress.quantize  # noqa: F401 (fails here when the family is absent)

    if "quantize" in STAGES:  # the family registered its own stage
        return

    @register_stage("quantize", QuantizeParams, restore=_apply_quantize)
    def run_quantize(ctx, params: QuantizeParams) -> None:
        """Quantize in place with a registered quantization config."""
        _apply_quantize(ctx, params)


# -------------------------------------------------------------------------------------- distill

def _install_distill() -> None:
    import netcompress.distill  # noqa: F401

    if "distill" in CALLBACKS:
        return

    @CALLBACKS.register("distill")
    def distill(ctx, terms: Any = "KD", task_weight: Optional[float] = None, cache: bool = False):
        """Distil the run's baseline (the teacher) into the model being fine-tuned."""
        from ..distill import Distiller

        specs = terms if isinstance(terms, list) else [terms]
        built = [typed_field(t, distill_vocab(), "distillation term", {}) for t in specs]
        x = ctx.calibration(min(64, ctx.recipe.data.calibration))
        return Distiller(ctx.teacher(), ctx.model, built, task_weight=task_weight, example_input=x, cache=cache)

    def check(terms: Any = "KD", **_):
        for t in terms if isinstance(terms, list) else [terms]:
            typed_field(t, distill_vocab(), "distillation term", {})

    distill.check = check


# -------------------------------------------------------------------------------- gradual prune

def _install_gradual() -> None:
    from ..prune import GradualPruning, Schedule  # noqa: F401
    from .builtin import prune_config_types

    if "gradual-prune" in CALLBACKS:
        return

    def schedules() -> dict[str, type]:
        import netcompress.prune as p

        return _names(p.AGP, p.OneShot)

    def build(config, schedule):
        cfg = typed_field(config, prune_config_types(), "pruning config", prune_vocab)
        return cfg, typed_field(schedule, schedules(), "schedule", {})

    @CALLBACKS.register("gradual-prune")
    def gradual_prune(ctx, config: Any, schedule: Any):
        """Unstructured masks that tighten during fine-tuning by a schedule (e.g. AGP's cubic ramp)."""
        from ..prune import GradualPruning

        cfg, sched = build(config, schedule)
        return GradualPruning(ctx.model, cfg, sched, data=_calibration_data(ctx, None))

    gradual_prune.check = build


# --------------------------------------------------------------------------------------- export

def _install_export() -> None:
    from ..export import save_compressed, to_int8_onnx  # noqa: F401

    if "onnx-int8" in EXPORTERS or "compressed" in EXPORTERS:
        return

    @EXPORTERS.register("onnx-int8")
    def export_int8(ctx, params, stem) -> dict:
        """int8 ONNX (u8 activations x s8 per-channel weights, calibrated QDQ) through onnxruntime."""
        from ..export import Int8Onnx, to_int8_onnx

        path = stem.parent / (stem.name + "-int8.onnx")
        cfg = Int8Onnx(static=True, per_channel=True)
        to_int8_onnx(ctx.model.eval(), ctx.example_input, path, cfg, data=_calibration_data(ctx, None), force=True)
        ctx.record("bit_widths", _weight_bits(ctx.model, 8))
        return {"onnx-int8": path}

    @EXPORTERS.register("compressed")
    def export_compressed(ctx, params, stem) -> dict:
        """The compressed artifact format (sparse / shared weights, Huffman coded)."""
        from ..export import save_compressed

        return {"compressed": save_compressed(ctx.model, stem.with_suffix(".ncz"), force=True)}


def install() -> None:
    for name, fn in (("quantize", _install_quantize), ("gradual-prune", _install_gradual), ("distill", _install_distill),
                     ("export", _install_export)):
        try:
            fn()
        except ModuleNotFoundError as exc:
            log.debug("recipe wiring for %s skipped: %s", name, exc)
        except ImportError as exc:
            log.debug("recipe wiring for %s skipped: %s", name, exc)


install()
