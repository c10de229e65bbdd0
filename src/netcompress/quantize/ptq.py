"""Post-training quantization: calibrate on N batches, write the statistics file, evaluate the
fake-quant model, and find the layer that hurts (per-layer SQNR).

>>> import torch, netcompress as nc
>>> from torch import nn
>>> m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
>>> calib = [torch.randn(32, 8) for _ in range(4)]
>>> report = nc.quantize_(m, PTQ(), data=calib)
>>> sorted(calibration_stats(m))
['0', '2']
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn

from ..core.config import PositiveInt
from ..core.data import forward, iter_inputs
from ..core.errors import ConfigError, DataError, ModelError
from ..core.io import atomic_write, ensure_writable
from .api import QUANTIZE, QuantizeConfig, quantize_layers, report_bits
from .bn_fold import fold_bn_
from .fake import FakeQuant, WeightFakeQuant, attach, quantizable_layers, set_quant_enabled, weight_quantizers
from .observers import MinMax, Observer
from .primitives import PerChannel, PerTensor, QuantSpec, sqnr_db

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PTQ(QuantizeConfig):
    """Post-training linear quantization.

    Defaults are the fast int8 path of this CPU in onnxruntime: weights signed symmetric per output
    channel, activations unsigned asymmetric per tensor (u8 x s8)."""

    weight: QuantSpec = field(default_factory=lambda: QuantSpec(8, True, PerChannel(0)))
    activation: QuantSpec | None = field(default_factory=lambda: QuantSpec(8, False, PerTensor()))
    weight_observer: Observer = field(default_factory=MinMax)
    act_observer: Observer = field(default_factory=MinMax)
    calib_batches: PositiveInt = 16
    batch_size: PositiveInt = 128
    fold_bn: bool = True

    def validate(self):
        if isinstance(self.activation.granularity if self.activation else None, PerChannel):
            raise ConfigError("PTQ.activation must be PerTensor() (per-channel activations have no fast kernels)")


def calibrate(model: nn.Module, data, batches: int = 16, batch_size: int = 128) -> int:
    """Run ``batches`` batches through ``model`` with every observer recording; returns batches seen.

    Ranges are observed on the float model (weight quantizers off too), as onnxruntime's calibration
    does, so the torch fake-quant model and the deployed int8 graph use the same ranges."""
    quants = [m for m in model.modules() if isinstance(m, FakeQuant)]
    wquants = [m for m in model.modules() if isinstance(m, WeightFakeQuant) and m.enabled]
    for q in quants:
        q.observing, q.enabled = True, False
    for w in wquants:
        w.enabled = False
    was = model.training
    model.eval()
    n = 0
    with torch.no_grad():
        for x in iter_inputs(data, batch_size=batch_size, max_batches=batches):
            forward(model, x)
            n += 1
    for q in quants:
        q.observing = False
        q.tracker.check("an activation quantizer")
        q.compute_qparams()
        q.enabled = True
    for w in wquants:
        w.enabled = True
    model.train(was)
    return n


@QUANTIZE.register(PTQ)
def _ptq(model: nn.Module, config: PTQ, report, *, data=None, example_inputs=None) -> None:
    layers = quantize_layers(model, config, report)
    for _, layer in layers:  # validate before mutating
        config.weight.axis_for(layer.weight)
    if config.activation is not None:
        next(iter_inputs(data, batch_size=config.batch_size, max_batches=1))  # fail on missing data before any change
    if config.fold_bn:
        fold_bn_(model)
    for _, layer in layers:
        attach(layer, config.weight, config.activation, config.weight_observer, config.act_observer)
        for wq in weight_quantizers(layer):
            wq.freeze(layer.parametrizations.weight.original)
    if config.activation is not None:
        calibrate(model, data, config.calib_batches, config.batch_size)
    report_bits(report, layers, config.weight, config.activation)


def calibration_stats(model: nn.Module) -> dict[str, dict]:
    """Per quantized layer: input statistics and the chosen scale / zero point (input and weight)."""
    out: dict[str, dict] = {}
    for name, layer in quantizable_layers(model):
        if not getattr(layer, "_nc_quantized", False):
            continue
        entry: dict = {}
        q = getattr(layer, "input_quant", None)
        if isinstance(q, FakeQuant) and q.tracker.min is not None:
            entry["inputs"] = {0: q.tracker.stats()}
            entry["input_scale"] = float(q.scale)
            entry["input_zero_point"] = int(q.zero_point)
            entry["input_bits"] = q.spec.bits
        for wq in weight_quantizers(layer):
            s = wq.scale.detach().flatten()
            entry["weight_bits"] = wq.spec.bits
            entry["weight_scale"] = [float(v) for v in s] if s.numel() > 1 else float(s)
            zps = [int(v) for v in wq.zero_point.flatten()]
            entry["weight_zero_point"] = zps if s.numel() > 1 else zps[0]
            entry["weight_shape"] = list(layer.parametrizations.weight.original.shape)
        out[name] = entry
    return out


def write_stats_file(model: nn.Module, path: str | Path, force: bool = False) -> Path:
    """The human-readable YAML statistics file (per layer: min, max, avg_min, avg_max, mean, std, shape,
    and the chosen scales / zero points)."""
    stats = calibration_stats(model)
    if not stats:
        raise ModelError("the model has no calibrated quantizers; run quantize_(model, PTQ(), data=...) first")
    path = ensure_writable(path, force)
    text = yaml.safe_dump(stats, sort_keys=False, default_flow_style=None, width=120)
    return atomic_write(path, lambda p: p.write_text(text))


def sqnr_report(model: nn.Module, x: torch.Tensor) -> list[dict]:
    """Per quantized layer, the network-output SQNR (dB) with only that layer quantized, and the
    SQNR of that layer's own output; the lowest output SQNR is the layer that hurts."""
    layers = [(n, m) for n, m in quantizable_layers(model) if getattr(m, "_nc_quantized", False)]
    if not layers:
        raise ModelError("the model has no quantizers; quantize it first")
    was = model.training
    model.eval()
    captured: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, a, out, n=n: captured.__setitem__(n, out.detach()))
             for n, m in layers]
    rows = []
    try:
        with torch.no_grad():
            set_quant_enabled(model, False)
            ref = model(x)
            ref_layers = dict(captured)
            for name, layer in layers:
                _set_layer(layer, True)
                out = model(x)
                rows.append({"layer": name, "output_sqnr_db": sqnr_db(ref, out),
                             "layer_sqnr_db": sqnr_db(ref_layers[name], captured[name])})
                _set_layer(layer, False)
            set_quant_enabled(model, True)
            full = model(x)
    finally:
        for h in hooks:
            h.remove()
        set_quant_enabled(model, True)
        model.train(was)
    rows.append({"layer": "(all)", "output_sqnr_db": sqnr_db(ref, full), "layer_sqnr_db": float("nan")})
    return rows


def _set_layer(layer: nn.Module, enabled: bool) -> None:
    for wq in weight_quantizers(layer):
        wq.enabled = enabled
    q = getattr(layer, "input_quant", None)
    if q is not None:
        q.enabled = enabled
