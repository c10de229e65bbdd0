"""The in-place quantization verb: ``quantize_(model, config, *, data=None, example_inputs=None) -> Report``.

    @QUANTIZE.register(MyConfig)
    def _apply(model, config, report, *, data=None, example_inputs=None) -> None: ...
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..core.report import Report
from ..core.select import Selective
from ..core.verbs import Verb
from .fake import QUANTIZABLE



@dataclass(frozen=True)
class QuantizeConfig(Selective):
    """Base of the configs ``quantize_`` takes; ``include`` / ``exclude`` choose the layers."""

    _abstract = True


QUANTIZE = Verb("quantize_", "quantize", QuantizeConfig, "Quantize in place: PTQ, QAT, binary, ternary, clusters.")


def quantize_(model: nn.Module, config: QuantizeConfig, *, data=None, example_inputs=None) -> Report:
    """Quantize ``model`` in place as ``config`` says; ``data`` feeds calibration (only its inputs reach the
    model). Returns what changed per layer (with the weight bits) and what was skipped."""
    return QUANTIZE(model, config, data=data, example_inputs=example_inputs)


def quantize_layers(model: nn.Module, config: QuantizeConfig, report=None) -> list[tuple[str, nn.Module]]:
    """The Conv/Linear layers ``config`` selects (skipped ones, with reasons, into ``report``)."""
    return config.select(model, QUANTIZABLE, report)


def report_bits(report, layers, weight_bits, activation=None, what: str | None = None) -> None:
    """One report line per quantized layer, and ``report.details["bits"]`` = {layer: weight bits}.

    ``weight_bits``: an int, a {layer: int} map, or a spec with ``.bits`` (and ``.granularity``); ``what`` may
    use ``{bits}``."""
    bits = report.details.setdefault("bits", {})
    for name, layer in layers:
        if isinstance(weight_bits, dict):
            b, detail = weight_bits[name], ""
        elif isinstance(weight_bits, int):
            b, detail = weight_bits, ""
        else:
            b, detail = weight_bits.bits, f" {type(weight_bits.granularity).__name__}"
        text = (what or "{bits}-bit weights{detail}").format(bits=b, detail=detail)
        if activation is not None:
            text += f", {activation.bits}-bit inputs"
        bits[name] = b
        report.change(name, layer, text, {"weight_bits": 32}, {"weight_bits": b})
