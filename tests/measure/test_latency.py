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
