"""Deployment: ONNX export checked against onnxruntime (compressed formats join here)."""
from .onnx import ExportError, check_onnx, ort_session, run_onnx, to_onnx

__all__ = ["ExportError", "check_onnx", "ort_session", "run_onnx", "to_onnx"]
