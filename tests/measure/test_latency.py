import time

import pytest

from netcompress.core.errors import ConfigError
from netcompress.measure import compare_latency, measure_latency, ratios


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
def test_interleaved_order_never_repeats_and_balances_positions(n):
    from netcompress.measure.latency import interleaved_order

    names = [f"c{i}" for i in range(n)]
    seq = interleaved_order(names, repeats=2 * n)
    assert all(seq.count(k) == 2 * n for k in names)
    if n > 1:  # a back-to-back repeat would run on a warm cache
        assert all(a != b for a, b in zip(seq, seq[1:]))
    # every candidate is first in a round equally often (two alternate A B A B: rounds are moot)
    firsts = seq[::n]
    assert n == 2 or {k: firsts.count(k) for k in names} == {k: firsts.count(names[0]) for k in names}


def test_compare_latency_calls_in_interleaved_order():
    calls = []
    cands = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    compare_latency(cands, (), warmup=0, repeats=4)
    assert calls == list("abcbcacababc")
