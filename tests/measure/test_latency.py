import time

import pytest
import torch

from netcompress.core.errors import ConfigError
from netcompress.measure import compare_latency, measure_latency, ort_callable, ratios


def test_interleaved_comparison_orders_slow_and_fast():
    fast = lambda: None  # noqa: E731
    slow = lambda: time.sleep(0.002)  # noqa: E731
    stats = compare_latency({"slow": slow, "fast": fast}, (), warmup=1, repeats=5)
    assert stats["slow"].median_ms >= 1.5
    assert ratios(stats, "slow")["fast"] > 10
    assert stats["fast"].repeats == 5


def test_bad_repeats():
    with pytest.raises(ConfigError):
        measure_latency(lambda: None, (), repeats=1)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_interleaved_order_never_repeats_and_balances_predecessors(n):
    from collections import Counter

    from netcompress.measure.latency import interleaved_order

    names = [f"c{i}" for i in range(n)]
    seq = interleaved_order(names, repeats=300)
    assert all(seq.count(k) == 300 for k in names)
    if n > 1:  # a back-to-back repeat would run on a warm cache
        assert all(a != b for a, b in zip(seq, seq[1:]))
    if n > 2:  # no candidate always follows the same (maybe cache-evicting) one
        pairs = Counter(zip(seq, seq[1:]))
        mean = (len(seq) - 1) / (n * (n - 1))
        assert len(pairs) == n * (n - 1) and all(0.6 * mean < c < 1.4 * mean for c in pairs.values()), pairs


def test_compare_latency_warm_calls_precede_each_timed_call():
    calls = []
    cands = {k: (lambda k=k: calls.append(k)) for k in "ab"}
    compare_latency(cands, (), warmup=0, repeats=3, warm_calls=1)
    assert calls == list("aabbaabbaabb")


def test_ort_callable_feeds_several_inputs_in_graph_order_and_checks_their_count():
    class Session:  # the two methods of onnxruntime.InferenceSession that ort_callable uses
        def get_inputs(self):
            return [type("I", (), {"name": n})() for n in ("input_ids", "attention_mask")]

        def run(self, _, feeds):
            return [feeds]

    run = ort_callable(Session())
    feeds = run(torch.ones(1, 3), torch.zeros(1, 3))[0]
    assert list(feeds) == ["input_ids", "attention_mask"] and feeds["attention_mask"].sum() == 0
    with pytest.raises(ConfigError, match="takes 2 input"):
        run(torch.ones(1, 3))
