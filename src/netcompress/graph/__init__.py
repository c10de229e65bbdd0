"""Tracing and channel-dependency groups (build -> group -> apply); knows nothing of importance."""
from .dependency import ChannelGraph, Group, Layer, Usage
from .plan import PrunePlan
from .trace import trace

__all__ = ["ChannelGraph", "Group", "Layer", "PrunePlan", "Usage", "trace"]
