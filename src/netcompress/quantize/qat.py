"""Quantization-aware training, the 16-bit float option, and mixed precision by measured sensitivity.

QAT: fake-quant with straight-through gradients during training (weights re-ranged every step,
activation ranges tracked by EMA), optional learned scales (LSQ), BN statistics frozen late in
training (:class:`FreezeBN`), then :func:`convert_qat_` bakes the quantized weights and folds BN
(per-channel grids survive the fold: each channel is multiplied by one constant).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from typing import Literal

from ..core.config import Fraction, PositiveInt
from ..core.data import forward, take
from ..core.errors import ConfigError
from ..train import Callback
from .api import QUANTIZE, QuantizeConfig, quantize_layers, report_bits
from .bn_fold import fold_bn_
from .fake import FakeQuant, attach, dequantize_, weight_quantizers
from .observers import MinMax, Observer
from .primitives import PerChannel, PerTensor, QuantSpec, check_bits, sqnr_db
from .ptq import calibrate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QAT(QuantizeConfig):
    """Quantization-aware training: fake-quant weights (and inputs) with straight-through gradients; fine-tune
    afterwards, then :func:`convert_qat_` (``learn_scale``: LSQ learned scales)."""

    weight: QuantSpec = field(default_factory=lambda: QuantSpec(8, True, PerChannel(0)))
    activation: QuantSpec | None = field(default_factory=lambda: QuantSpec(8, False, PerTensor()))
    learn_scale: bool = False
    ema_momentum: Fraction = 0.99
    weight_observer: Observer | None = None


@QUANTIZE.register(QAT)
def _qat(model: nn.Module, config: QAT, report, *, data=None, example_inputs=None) -> None:
    layers = quantize_layers(model, config, report)
    for _, layer in layers:
        config.weight.axis_for(layer.weight)
    for _, layer in layers:
        attach(layer, config.weight, config.activation, config.weight_observer, None, config.learn_scale)
        if config.learn_scale:  # LSQ: start from the observed range, then learn it
            for wq in weight_quantizers(layer):
                wq.freeze(layer.parametrizations.weight.original)
    if config.activation is not None:
        if data is not None:
            calibrate(model, data, batches=4)
        # without data the first training batch initialises each EMA range
        for m in model.modules():
            if isinstance(m, FakeQuant):
                m.enabled, m.observing, m.ema_momentum = True, True, config.ema_momentum
                if data is not None:
                    m._ema = (m.tracker.min.reshape(()), m.tracker.max.reshape(()))
                m.tracker.sample_size = 1  # keep training cheap: the EMA is what ranges the activations
    report_bits(report, layers, config.weight, config.activation)


class FreezeBN(Callback):
    """Trainer callback: from ``epoch`` on, BN layers use (and stop updating) their running statistics."""

    def __init__(self, epoch: int):
        if epoch < 0:
            raise ConfigError(f"FreezeBN.epoch must be >= 0, got {epoch}")
        self.epoch = epoch

        self._active = False

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self._active = epoch >= self.epoch
        if self._active:  # after the trainer's model.train() for this epoch
            freeze_bn_(trainer.model)

    def on_batch_start(self, trainer, inputs=None, targets=None) -> None:
        if self._active:  # in case anything put the model back in train mode mid-epoch
            freeze_bn_(trainer.model)


def freeze_bn_(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def convert_qat_(model: nn.Module, fold_bn: bool = True) -> None:
    """Deployable form: bake the fake-quantized weights into plain weights, drop the quantizers,
    fold BN. Export with ``export.to_int8_onnx`` for real int8."""
    dequantize_(model, bake=True)
    if fold_bn:
        fold_bn_(model)


@dataclass(frozen=True)
class Float16(QuantizeConfig):
    """Cast the model to 16-bit floats: ``"bfloat16"`` (AMX / AVX512-BF16 kernels where the CPU has
    them) or ``"float16"`` (``torch.bfloat16`` / ``torch.float16`` are accepted too)."""

    dtype: Literal["bfloat16", "float16"] = "bfloat16"

    def __post_init__(self):
        if isinstance(self.dtype, torch.dtype):
            object.__setattr__(self, "dtype", str(self.dtype).removeprefix("torch."))
        super().__post_init__()

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


@QUANTIZE.register(Float16)
def _float16(model: nn.Module, config: Float16, report, *, data=None, example_inputs=None) -> None:
    layers = quantize_layers(model, config, report)
    if config.include == ("*",) and not config.exclude:
        model.to(config.torch_dtype)
    else:
        for _, layer in layers:
            layer.to(config.torch_dtype)
    report_bits(report, layers, 16, what=f"{config.dtype} weights")


@dataclass(frozen=True)
class MixedPrecision(QuantizeConfig):
    """Per-layer weight bit widths chosen by measured sensitivity under a size budget.

    ``budget_bits``: average bits per weight allowed over the quantized layers. Sensitivity of a
    (layer, bits) choice = the drop in network-output SQNR when only that layer is quantized."""

    budget_bits: float = 4.0
    candidates: tuple[int, ...] = (2, 3, 4, 6, 8)
    # min/max, not MSE: MSE-clipped 4-bit weights cost ResNet-20 far more accuracy (benchmarks.quant_ptq)
    observer: Observer = field(default_factory=MinMax)
    calib_batches: PositiveInt = 4

    def validate(self):
        if not self.candidates:
            raise ConfigError("MixedPrecision.candidates must not be empty")
        for b in self.candidates:
            check_bits(b, "MixedPrecision.candidates", allowed=tuple(range(2, 9)))
        if not min(self.candidates) <= self.budget_bits:
            raise ConfigError(f"MixedPrecision.budget_bits={self.budget_bits} is below the smallest candidate "
                              f"{min(self.candidates)}")


def _output_sqnr(model, x, ref, layer, bits, observer) -> float:
    spec = QuantSpec(bits, True, PerChannel(0))
    attach(layer, spec, None, observer)
    for wq in weight_quantizers(layer):
        wq.freeze(layer.parametrizations.weight.original)
    with torch.no_grad():
        out = forward(model, x)
    from .fake import detach_quant

    detach_quant(layer, bake=False)
    return sqnr_db(ref, out)


@QUANTIZE.register(MixedPrecision)
def _mixed(model: nn.Module, config: MixedPrecision, report, *, data=None, example_inputs=None) -> None:
    """The model gets per-channel weight fake-quant at the chosen widths (``report.details["bits"]``)."""
    layers = quantize_layers(model, config, report)
    x, _ = take(data, 128 * config.calib_batches)
    was = model.training
    model.eval()
    with torch.no_grad():
        ref = forward(model, x)
    cands = sorted(set(config.candidates))
    sens = {name: {b: _output_sqnr(model, x, ref, layer, b, config.observer) for b in cands} for name, layer in layers}
    sizes = {name: layer.weight.numel() for name, layer in layers}
    total = sum(sizes.values())
    bits = {name: cands[-1] for name, _ in layers}
    # greedy: lower the layer whose next step down costs the least output noise per bit saved
    while sum(bits[n] * sizes[n] for n in bits) > config.budget_bits * total:
        best, best_cost = None, None
        for n in bits:
            i = cands.index(bits[n])
            if i == 0:
                continue
            lost_db = min(sens[n][bits[n]], 200.0) - min(sens[n][cands[i - 1]], 200.0)
            saved = (bits[n] - cands[i - 1]) * sizes[n]
            noise_ratio = 10 ** (-sens[n][cands[i - 1]] / 10) - 10 ** (-min(sens[n][bits[n]], 200.0) / 10)
            cost = max(noise_ratio, 0.0) / saved + 1e-12 * lost_db
            if best_cost is None or cost < best_cost:
                best, best_cost = n, cost
        if best is None:
            break
        bits[best] = cands[cands.index(bits[best]) - 1]
    for name, layer in layers:
        attach(layer, QuantSpec(bits[name], True, PerChannel(0)), None, config.observer)
        for wq in weight_quantizers(layer):
            wq.freeze(layer.parametrizations.weight.original)
    model.train(was)
    log.info("mixed precision: %s (avg %.2f bits)", bits, sum(bits[n] * sizes[n] for n in bits) / total)
    report_bits(report, layers, bits)


__all__ = ["QAT", "FreezeBN", "Float16", "MixedPrecision", "convert_qat_", "freeze_bn_"]
