"""Measurement: params, nonzeros, MACs per layer, bytes, latency (A/B interleaved), accuracy."""
from .counting import Analysis, LayerStats, analyze, bytes_fp32, count_nonzero, count_params, run_forward
from .latency import LatencyStats, compare_latency, measure_latency, ort_callable, ratios, set_threads


def accuracy(model, data, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on a Dataset or DataLoader (eval mode, no grad)."""
    from ..train import evaluate

    return evaluate(model, data, batch_size=batch_size)["accuracy"]


def file_bytes(path) -> int:
    """Bytes on disk of a saved artifact."""
    import os

    return os.path.getsize(path)


__all__ = ["Analysis", "LayerStats", "LatencyStats", "accuracy", "analyze", "bytes_fp32", "compare_latency",
           "count_nonzero", "count_params", "file_bytes", "measure_latency", "ort_callable", "ratios",
           "run_forward", "set_threads"]
