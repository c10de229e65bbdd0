"""Latency on this device: warm-up, medians of repeats, fixed threads, A/B interleaved comparisons.

Shared machines are noisy, so a claim is a ratio of medians measured in the same run with the
candidates interleaved (A B A B ...), never two numbers taken minutes apart."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from ..core.errors import ConfigError


@dataclass(frozen=True)
class LatencyStats:
    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int

    @classmethod
    def from_samples(cls, samples_s: list[float]) -> "LatencyStats":
        ms = sorted(s * 1e3 for s in samples_s)
        q = lambda f: ms[min(len(ms) - 1, int(f * len(ms)))]  # noqa: E731
        return cls(statistics.median(ms), q(0.1), q(0.9), len(ms))


def set_threads(threads: int | None) -> None:
    """Fix torch's intra-op threads once per process (switching back and forth leaves MKL at 1 thread)."""
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _as_callable(fn_or_model, inputs) -> Callable[[], object]:
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    if isinstance(fn_or_model, torch.nn.Module):
        fn_or_model.eval()

    def call():
        with torch.inference_mode():
            return fn_or_model(*args)

    return call


def measure_latency(fn_or_model, inputs=(), warmup: int = 5, repeats: int = 30,
                    threads: int | None = 1) -> LatencyStats:
    """Median latency of one call of ``fn_or_model(*inputs)``."""
    return compare_latency({"x": fn_or_model}, inputs, warmup, repeats, threads)["x"]


def compare_latency(candidates: Mapping[str, object], inputs=(), warmup: int = 5, repeats: int = 30,
                    threads: int | None = 1) -> dict[str, LatencyStats]:
    """Time several candidates interleaved (A B C A B C ...) on the same inputs.

    A candidate is an ``nn.Module``, or any callable taking ``*inputs``; an onnxruntime session is
    wrapped by :func:`netcompress.measure.ort_callable`. Returns stats per name; see :func:`ratios`."""
    if repeats < 3 or warmup < 0:
        raise ConfigError(f"repeats must be >= 3 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    set_threads(threads)
    calls = {k: _as_callable(v, inputs) for k, v in candidates.items()}
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[float]] = {k: [] for k in calls}
    for k in interleaved_order(list(calls), repeats):
        t0 = time.perf_counter()
        calls[k]()
        samples[k].append(time.perf_counter() - t0)
    return {k: LatencyStats.from_samples(v) for k, v in samples.items()}


def interleaved_order(names: list[str], repeats: int) -> list[str]:
    """The timed call sequence: ``repeats`` rounds, round i rotated by i (A B C, B C A, C A B, ...).

    No candidate ever runs twice in a row, and each one takes every position equally often. A
    candidate that ran twice in a row would find its weights still in the L2 cache: the former
    A B C / C B A alternation did that for the first and last names, which made onnxruntime's
    int8 ResNet-20 look up to 14% faster than an identical graph timed in the middle."""
    n = len(names)
    if n <= 2:
        return names * repeats  # A B A B: already never repeats
    return [names[(i + j) % n] for i in range(repeats) for j in range(n)]


def ratios(stats: Mapping[str, LatencyStats], baseline: str) -> dict[str, float]:
    """Speed-up of each candidate over ``baseline`` (baseline median / candidate median)."""
    base = stats[baseline].median_ms
    return {k: base / v.median_ms for k, v in stats.items()}


def ort_callable(session, input_name: str | None = None) -> Callable:
    """Wrap an onnxruntime InferenceSession as a callable on torch tensors for :func:`compare_latency`."""
    name = input_name or session.get_inputs()[0].name

    def run(x):
        return session.run(None, {name: x.numpy() if isinstance(x, torch.Tensor) else x})

    return run
