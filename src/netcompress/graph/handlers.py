"""Per-layer-type handlers, in one public registry: how a layer takes part in channel pruning.

A handler (Torch-Pruning's ``BasePruningFunc``) says how a layer joins the channel graph (:meth:`Handler.join`:
the channel ids it consumes, produces or follows, and what it costs) and how its tensors are indexed by its
channels (:meth:`Handler.slots`, per role, the weight first) and resized. Roles: ``"out"`` (channels the layer
produces), ``"in"`` (channels it consumes), ``"channel"`` (one axis following the channels: a norm, a depthwise
conv). Handlers are found through the module's MRO (a subclass of ``nn.Conv2d`` is a conv). A layer holding
parameters that has none is *opaque*: its channels are locked, and pruning reports it as skipped.

>>> import torch.nn.functional as F
>>> class RawLinear(nn.Module):
...     def __init__(self, n_in, n_out):
...         super().__init__()
...         self.weight, self.bias = nn.Parameter(torch.randn(n_out, n_in)), nn.Parameter(torch.zeros(n_out))
...     def forward(self, x):
...         return F.linear(x, self.weight, self.bias)
>>> _ = register_handler(RawLinear, LinearHandler())   # weight rows = outputs, columns = inputs
>>> layer = handler_for(RawLinear(4, 3)).prune_out_channels(RawLinear(4, 3), [0, 2])
>>> tuple(layer.weight.shape), tuple(layer.bias.shape)
((2, 4), (2,))
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..core.errors import ConfigError, ModelError

__all__ = ["Handler", "ConvHandler", "LinearHandler", "NormHandler", "PassHandler", "LockHandler",
           "register_handler", "handler_for", "handled_types", "is_opaque"]

_HANDLERS: dict[type, "Handler"] = {}


class Handler:
    """Base of the handlers: override :meth:`join` and, for a layer with channel-indexed tensors, :attr:`roles`,
    :meth:`slots` and :attr:`size_attrs`. ``join`` uses the graph's methods: ``channels_in``, ``produce``,
    ``use``, ``add_layer``, ``lock``, ``emit``, ``follow``, ``reshape``, ``fail``."""

    roles: tuple[str, ...] = ()  # roles the layer's tensors are indexed by (none: it holds no such tensor)
    follows = False  # its "channel" role follows channels made elsewhere (norms); a depthwise conv's makes them
    size_attrs: dict[str, tuple[str, ...]] = {}  # role -> module attributes holding that role's channel count

    def join(self, graph, node, name: str, module: nn.Module) -> None:
        raise NotImplementedError

    def slots(self, module: nn.Module, role: str) -> Sequence[tuple[str, int]]:
        """``(attribute, dim)`` of each tensor indexed by ``role``, the weight first; None attributes are skipped."""
        return ()

    def resize(self, module: nn.Module, sizes: dict[str, int]) -> None:
        """Set the module's size attributes after slicing; ``sizes``: role -> channels kept."""
        for role, n in sizes.items():
            for attr in self.size_attrs.get(role, ()):
                if hasattr(module, attr):
                    setattr(module, attr, (n,) if isinstance(getattr(module, attr), tuple) else n)

    def channels(self, module: nn.Module, role: str) -> int:
        for attr, dim in self.slots(module, role):
            if getattr(module, attr, None) is not None:
                return int(getattr(module, attr).shape[dim])
        raise ModelError(f"{type(module).__name__} has no tensor indexed by its {role!r} channels")

    def get_out_channels(self, module: nn.Module) -> int:
        return self.channels(module, "out" if "out" in self.roles else "channel")

    def get_in_channels(self, module: nn.Module) -> int:
        return self.channels(module, "in" if "in" in self.roles else "channel")

    def sliced(self, module: nn.Module, keep: dict[str, Sequence[int]]) -> dict[str, torch.Tensor]:
        """The module's tensors cut to the ``keep`` indices of each role (the module is not changed)."""
        out: dict[str, torch.Tensor] = {}
        for role, idx in keep.items():
            for attr, dim in self.slots(module, role):
                t = out.get(attr, getattr(module, attr, None))
                if t is not None:
                    out[attr] = t.detach().index_select(dim, torch.as_tensor(list(idx), device=t.device)).clone()
        return out

    @torch.no_grad()
    def prune(self, module: nn.Module, keep: dict[str, Sequence[int]], tensors=None) -> nn.Module:
        """Keep only the ``keep`` indices of each role, in place (``tensors``: from :meth:`sliced`)."""
        for attr, t in (self.sliced(module, keep) if tensors is None else tensors).items():
            old = getattr(module, attr)
            setattr(module, attr, nn.Parameter(t, old.requires_grad) if isinstance(old, nn.Parameter) else t)
        self.resize(module, {role: len(idx) for role, idx in keep.items()})
        return module

    def prune_out_channels(self, module: nn.Module, keep: Sequence[int]) -> nn.Module:
        return self.prune(module, {"out" if "out" in self.roles else "channel": keep})

    def prune_in_channels(self, module: nn.Module, keep: Sequence[int]) -> nn.Module:
        return self.prune(module, {"in" if "in" in self.roles else "channel": keep})


class LinearHandler(Handler):
    """A dense layer on the last dim: ``weight`` (out, in), optional ``bias`` (``nn.Linear`` or a user's layer)."""

    roles = ("in", "out")
    size_attrs = {"in": ("in_features",), "out": ("out_features",)}

    def slots(self, module, role):
        return {"out": (("weight", 0), ("bias", 0)), "in": (("weight", 1),)}[role]

    def join(self, graph, node, name, module):
        shape = graph.shape(node)
        labels, _ = graph.channels_in(node, dim=-1, size=self.get_in_channels(module))
        out = graph.produce(name, self.get_out_channels(module))
        graph.use(name, "in", labels)
        graph.use(name, "out", out)
        graph.add_layer(node, name, labels, out, 1, math.prod(shape[1:-1]), getattr(module, "bias", None) is not None)
        graph.emit(node, out, len(shape) - 1)


class ConvHandler(Handler):
    """Convolutions, channels on dim 1. A depthwise conv follows its channels; other grouped convs tie channels
    to their group and are locked whole."""

    roles = ("in", "out", "channel")
    size_attrs = {"in": ("in_channels",), "out": ("out_channels",), "channel": ("in_channels", "out_channels", "groups")}

    def __init__(self, transposed: bool = False):
        self.transposed = transposed  # weight (in, out / groups, ...)

    def slots(self, module, role):
        out_dim, in_dim = (1, 0) if self.transposed else (0, 1)
        return {"out": (("weight", out_dim), ("bias", 0)), "in": (("weight", in_dim),),
                "channel": (("weight", 0), ("bias", 0))}[role]

    def join(self, graph, node, name, module):
        labels, _ = graph.channels_in(node, dim=1, size=module.in_channels)
        cost = (math.prod(module.kernel_size), math.prod(graph.shape(node)[2:]), module.bias is not None)
        if module.groups == 1:
            out = graph.produce(name, module.out_channels)
            graph.use(name, "in", labels)
            graph.use(name, "out", out)
            graph.add_layer(node, name, labels, out, *cost)
        elif module.groups == module.in_channels == module.out_channels and not self.transposed:
            out = labels  # depthwise: one channel in, one out
            graph.use(name, "channel", labels)
            graph.add_layer(node, name, None, labels, *cost)
        else:
            graph.lock(labels)
            out = graph.produce(name, module.out_channels, locked=True)
        graph.emit(node, out, 1)


class NormHandler(Handler):
    """Per-channel vectors on dim ``dim`` whose count is the attribute ``size_attr`` (BatchNorm with its running
    statistics, LayerNorm over the channels alone, PReLU's slopes): they follow the channels. A norm over more
    than the channels mixes them and locks them; a single shared vector entry lets them pass."""

    roles = ("channel",)
    follows = True

    def __init__(self, dim: int, size_attr: str, buffers: tuple[str, ...] = (), norm: bool = True):
        self.dim, self.size_attrs, self.buffers, self.norm = dim, {"channel": (size_attr,)}, buffers, norm

    def slots(self, module, role):
        return (("weight", 0), ("bias", 0), *((b, 0) for b in self.buffers))

    def join(self, graph, node, name, module):
        labels, cdim = graph.channels_in(node)
        n = getattr(module, self.size_attrs["channel"][0])
        n = (n[0] if len(n) == 1 else None) if isinstance(n, tuple) else n
        if n == len(labels) and cdim == self.dim % len(graph.shape(node)):
            if any(getattr(module, attr, None) is not None for attr, _ in self.slots(module, "channel")):
                graph.use(name, "channel", labels)
                if self.norm:  # channel gates then sit after the norm
                    graph.mark_normed(node)
        elif n != 1:
            graph.lock(labels)
        graph.emit(node, labels, cdim)


class PassHandler(Handler):
    """Elementwise and spatial layers (activations, dropout, pooling, padding): channels pass through."""

    def join(self, graph, node, name, module):
        graph.follow(node, *graph.channels_in(node))


class FlattenHandler(Handler):
    def join(self, graph, node, name, module):
        graph.reshape(node, *graph.channels_in(node))


class LockHandler(Handler):
    """Layers that mix channels (softmax, GroupNorm, ...) and opaque layers: their input and output channels
    are locked."""

    def join(self, graph, node, name, module):
        labels, cdim = graph.channels_in(node)
        graph.lock(labels)
        shape = graph.shape(node)
        if shape is not None and len(shape) > cdim and shape[cdim] == len(labels):
            graph.emit(node, labels, cdim)
        elif shape is not None and len(shape) >= 2:  # other channels come out: new ones, locked
            dim = min(cdim, len(shape) - 1)
            graph.emit(node, graph.produce(name, shape[dim], locked=True), dim)


PASS, LOCK = PassHandler(), LockHandler()


def register_handler(layer_types: type | Sequence[type], handler: Handler) -> Handler:
    """Handle every module of ``layer_types`` (and their subclasses) with ``handler``, replacing any earlier one."""
    types = (layer_types,) if isinstance(layer_types, type) else tuple(layer_types)
    if not isinstance(handler, Handler):
        raise ConfigError(f"register_handler needs a Handler instance (netcompress.graph.Handler), got {handler!r}")
    bad = [t for t in types if not (isinstance(t, type) and issubclass(t, nn.Module))]
    if bad:
        raise ConfigError(f"register_handler: {bad[0]!r} is not an nn.Module subclass")
    _HANDLERS.update(dict.fromkeys(types, handler))
    return handler


def handler_for(module: nn.Module) -> Handler | None:
    """The handler of the nearest registered class in ``module``'s MRO, or None."""
    return next((_HANDLERS[c] for c in type(module).__mro__ if c in _HANDLERS), None)


def handled_types() -> tuple[type, ...]:
    """The registered layer types holding channel-indexed tensors: what structured pruning supports."""
    return tuple(t for t, h in _HANDLERS.items() if h.roles)


def is_opaque(module: nn.Module) -> bool:
    """A layer with parameters of its own, no sub-modules and no handler: the graph does not look inside."""
    return (handler_for(module) is None and next(module.children(), None) is None
            and next(module.parameters(recurse=False), None) is not None)


register_handler(nn.Linear, LinearHandler())
register_handler((nn.Conv1d, nn.Conv2d, nn.Conv3d), ConvHandler())
register_handler((nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d), ConvHandler(transposed=True))
register_handler(nn.modules.batchnorm._BatchNorm, NormHandler(1, "num_features", ("running_mean", "running_var")))
register_handler(nn.LayerNorm, NormHandler(-1, "normalized_shape"))
register_handler(nn.PReLU, NormHandler(1, "num_parameters", norm=False))
register_handler(nn.Flatten, FlattenHandler())
register_handler((nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
                  nn.LeakyReLU, nn.ELU, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
                  nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                  nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                  nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, nn.ZeroPad2d, nn.ConstantPad2d), PASS)
register_handler((nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.Softmax, nn.LogSoftmax,
                  nn.LocalResponseNorm), LOCK)
