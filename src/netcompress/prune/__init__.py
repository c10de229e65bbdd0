"""Pruning: unstructured masks and criteria, schedules, structured removal through the graph."""
from .api import PRUNE_TRANSFORMS, prune_
from .structured import BlockPruning, ChannelPruning, Latency, MACs, Params, prune_channels  # noqa: F401 (issue 4)

__all__ = ["PRUNE_TRANSFORMS", "prune_"]
