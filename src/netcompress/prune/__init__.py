"""Pruning: unstructured masks and criteria, schedules, structured removal through the graph."""
from .api import PRUNE_TRANSFORMS, prune_

__all__ = ["PRUNE_TRANSFORMS", "prune_"]
