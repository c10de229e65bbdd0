"""Deployable file formats by name, for recipes and the CLI: ``onnx``, ``onnx-int8``, ``compressed``, ``safetensors``.

A format is one function ``write(model, stem, *, example_inputs, data, options) -> Path`` writing next to ``stem``
(a path without suffix); ``options`` is an :class:`ExportOptions`. A new format registers itself here by name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Optional

from torch import nn

from ..core.config import Config, Interval
from ..core.registry import Registry
from .nbits import NBitsOnnx
from .onnx import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from .quantized import Int8Onnx


@dataclass(frozen=True)
class ExportOptions(Config):
    """How formats are written: ONNX ``opset``, whether onnxruntime is checked against torch (``verify``, within
    ``atol``), short tensor names without debug metadata (``compact``), and the int8 and weight-only n-bit settings. (Recipes name it
    through the export stage, which adds the formats.)"""

    _abstract = True
    opset: Annotated[int, Interval(MIN_OPSET, MAX_OPSET)] = DEFAULT_OPSET
    verify: bool = True
    atol: Annotated[float, Interval(0, 1, "(]")] = 1e-4
    compact: bool = True
    int8: Int8Onnx = field(default_factory=lambda: Int8Onnx(static=True, per_channel=True))
    nbits: NBitsOnnx = field(default_factory=NBitsOnnx)


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    write: Callable[..., Path]
    weight_bits: Optional[int] = None  # what the file stores, where one width holds for every layer
    doc: str = ""


FORMATS: Registry[Format] = Registry("export format")


def register_format(name: str, suffix: str, weight_bits: Optional[int] = None):
    def deco(fn):
        FORMATS.register(name)(Format(name, suffix, fn, weight_bits, (fn.__doc__ or "").strip()))
        return fn
    return deco


def write_format(name: str, model: nn.Module, stem: Path, *, example_inputs, data=None,
                 options: ExportOptions = ExportOptions()) -> Path:
    """Write ``model`` in format ``name`` to ``stem`` + the format's suffix (overwriting a file netcompress made)."""
    fmt = FORMATS.get(name)
    path = fmt.write(model, Path(stem).parent / (Path(stem).name + fmt.suffix), example_inputs=example_inputs,
                     data=data, options=options)
    if options.compact and path.suffix == ".onnx":
        from .onnx import compact_onnx

        compact_onnx(path)
    return path


@register_format("onnx", ".onnx")
def _onnx(model, path, *, example_inputs, data, options):
    """fp32 ONNX, checked against torch by onnxruntime."""
    from .onnx import to_onnx

    return to_onnx(model, example_inputs, path, verify=options.verify, opset=options.opset, atol=options.atol,
                   force=True)


@register_format("onnx-int8", "-int8.onnx", weight_bits=8)
def _onnx_int8(model, path, *, example_inputs, data, options):
    """int8 ONNX (u8 activations x s8 per-channel weights, calibrated QDQ) through onnxruntime."""
    from .quantized import to_int8_onnx

    return to_int8_onnx(model.eval(), example_inputs, path, options.int8, data=data, force=True)


@register_format("onnx-nbits", "-nbits.onnx")
def _onnx_nbits(model, path, *, example_inputs, data, options):
    """Weight-only 4- or 8-bit ONNX (``options.nbits``) run by onnxruntime's MatMulNBits / GatherBlockQuantized."""
    from .nbits import to_nbits_onnx

    return to_nbits_onnx(model.eval(), example_inputs, path, options.nbits, force=True)


@register_format("compressed", ".ncz")
def _compressed(model, path, *, example_inputs, data, options):
    """The compressed artifact format (sparse / shared weights, Huffman coded)."""
    from .compressed import save_compressed

    return save_compressed(model, path, force=True)


@register_format("safetensors", ".safetensors")
def _safetensors(model, path, *, example_inputs, data, options):
    """The weights as safetensors."""
    from ..core.io import save_weights

    return save_weights(model, path, force=True)
