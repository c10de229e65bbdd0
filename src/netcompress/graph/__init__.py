"""Tracing and channel-dependency groups (build -> group -> apply); knows nothing of importance.

How each layer type takes part is its handler's business: one public registry
(:func:`register_handler`) that a user extends for a layer type of their own."""
from .dependency import ChannelGraph, Group, Layer, Usage
from .handlers import (ConvHandler, Handler, LinearHandler, LockHandler, NormHandler, PassHandler, handled_types,
                       handler_for, register_handler)
from .plan import PrunePlan
from .trace import trace

__all__ = ["ChannelGraph", "ConvHandler", "Group", "Handler", "Layer", "LinearHandler", "LockHandler", "NormHandler",
           "PassHandler", "PrunePlan", "Usage", "handled_types", "handler_for", "register_handler", "trace"]
