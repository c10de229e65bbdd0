"""Deployment: ONNX export checked against onnxruntime, int8 ONNX through onnxruntime, and the
compressed artifact format (``save_compressed`` / ``load_compressed``)."""
from .compressed import compression_table, effective_state_dict, load_compressed, save_compressed
from .onnx import ORT_DISABLED_OPTIMIZERS, ExportError, check_onnx, compact_onnx, ort_session, run_onnx, to_onnx
from .quantized import Int8Onnx, observe_onnx, quantize_onnx, to_int8_onnx
from .nbits import NBitsOnnx, quantize_nbits_onnx, to_nbits_onnx
from .formats import FORMATS, ExportOptions, register_format, write_format

__all__ = ["NBitsOnnx", "quantize_nbits_onnx", "to_nbits_onnx", "FORMATS", "ExportOptions", "register_format", "write_format", "ORT_DISABLED_OPTIMIZERS", "ExportError", "Int8Onnx", "check_onnx", "compact_onnx", "compression_table",
           "effective_state_dict", "load_compressed", "observe_onnx", "ort_session", "quantize_onnx", "run_onnx",
           "save_compressed", "to_int8_onnx", "to_onnx"]
