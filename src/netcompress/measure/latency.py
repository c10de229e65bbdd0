"""Latency on this device: warm-up, medians of repeats, fixed threads, A/B interleaved comparisons.

Shared machines are noisy, so a claim is a ratio of medians measured in the same run with the
candidates interleaved (A B A B ...), never two numbers taken minutes apart."""
from __future__ import annotations

import random
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
                    threads: int | None = 1, warm_calls: int = 0) -> dict[str, LatencyStats]:
    """Time several candidates interleaved on the same inputs (see :func:`interleaved_order`).

    ``warm_calls``: untimed calls of the same candidate right before each timed one, so every
    candidate is timed with its own weights in cache, as a model serving requests back to back;
    with 0 each timed call follows some other candidate, which may have evicted them.

    A candidate is an ``nn.Module``, or any callable taking ``*inputs``; an onnxruntime session is
    wrapped by :func:`netcompress.measure.ort_callable`. Returns stats per name; see :func:`ratios`."""
    if repeats < 3 or warmup < 0 or warm_calls < 0:
        raise ConfigError(f"repeats must be >= 3, warmup and warm_calls >= 0, got repeats={repeats}, "
                          f"warmup={warmup}, warm_calls={warm_calls}")
    set_threads(threads)
    calls = {k: _as_callable(v, inputs) for k, v in candidates.items()}
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[float]] = {k: [] for k in calls}
    for k in interleaved_order(list(calls), repeats):
        for _ in range(warm_calls):
            calls[k]()
        t0 = time.perf_counter()
        calls[k]()
        samples[k].append(time.perf_counter() - t0)
    return {k: LatencyStats.from_samples(v) for k, v in samples.items()}


def interleaved_order(names: list[str], repeats: int, seed: int = 0) -> list[str]:
    """The timed call sequence: ``repeats`` rounds, each a seeded shuffle of ``names``.

    No candidate runs twice in a row, and over the rounds each one follows every other one about
    equally often. Both matter with a small L2 cache: a candidate timed right after itself finds its weights
    still in cache, one timed after a large fp32 graph does not. A fixed A B C / C B A alternation
    gave the first and last names the back-to-back runs, and a fixed rotation always the same
    predecessor: either made one of two identical graphs look faster."""
    if len(names) <= 2:
        return names * repeats  # A B A B: never repeats, each always follows the other
    rng = random.Random(seed)
    seq: list[str] = []
    for _ in range(repeats):
        order = list(names)
        rng.shuffle(order)
        if seq and order[0] == seq[-1]:
            order[0], order[-1] = order[-1], order[0]
        seq += order
    return seq


def ratios(stats: Mapping[str, LatencyStats], baseline: str) -> dict[str, float]:
    """Speed-up of each candidate over ``baseline`` (baseline median / candidate median)."""
    base = stats[baseline].median_ms
    return {k: base / v.median_ms for k, v in stats.items()}


def ort_callable(session, input_name: str | None = None) -> Callable:
    """Wrap an onnxruntime InferenceSession as a callable on torch tensors for :func:`compare_latency`.

    ``f(*inputs)`` feeds the session's inputs in graph order (e.g. a text encoder's ``input_ids,
    attention_mask``); ``input_name`` names the input of a one-input call. Returns the session's outputs."""
    graph_inputs = [i.name for i in session.get_inputs()]
    names = [input_name] if input_name is not None else graph_inputs

    def run(*xs):
        if len(xs) != len(names):
            raise ConfigError(f"the ONNX session takes {len(names)} input(s) {names}, got {len(xs)}")
        return session.run(None, {n: x.numpy() if isinstance(x, torch.Tensor) else x for n, x in zip(names, xs)})

    return run
