"""Per-layer-type handlers: how a layer takes part in channel pruning, in one public registry.

A handler (Torch-Pruning's ``BasePruningFunc``) says, for one layer type:

* how the layer joins the channel graph (:meth:`Handler.join`): which channel ids it consumes, produces or
  follows, and what it costs (the :class:`~netcompress.graph.dependency.Layer` it records);
* how its tensors are indexed by its channels (:meth:`Handler.slots`: ``(attribute, dim)`` pairs per role,
  the weight first) and how the module is resized once sliced (:attr:`Handler.size_attrs`, :meth:`resize`).

Roles: ``"out"`` (channels the layer produces: a conv's filters), ``"in"`` (channels it consumes: a conv's
input columns), ``"channel"`` (one axis indexed by the channels flowing through: a norm, a depthwise conv).
Handlers are looked up through the module's MRO, so a subclass of ``nn.Conv2d`` is handled as a conv. A layer
type of your own joins by registering a handler; a layer holding parameters that has none is *opaque*: the
graph does not look inside, its channels are locked (left alone), and pruning reports it as skipped.

>>> import torch.nn.functional as F
>>> class RawLinear(nn.Module):
...     def __init__(self, n_in, n_out):
...         super().__init__()
...         self.weight, self.bias = nn.Parameter(torch.randn(n_out, n_in)), nn.Parameter(torch.zeros(n_out))
...     def forward(self, x):
...         return F.linear(x, self.weight, self.bias)
>>> _ = register_handler(RawLinear, LinearHandler())   # weight rows = outputs, columns = inputs
>>> h = handler_for(RawLinear(4, 3))
>>> h.get_in_channels(RawLinear(4, 3)), h.get_out_channels(RawLinear(4, 3))
(4, 3)
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

from ..core.errors import ConfigError, ModelError

if TYPE_CHECKING:  # the graph passes itself to join(); no import at run time (dependency imports us)
    from .dependency import ChannelGraph

__all__ = ["Handler", "ConvHandler", "LinearHandler", "NormHandler", "PassHandler", "LockHandler",
           "register_handler", "handler_for", "handled_types", "is_opaque"]

_HANDLERS: dict[type, "Handler"] = {}


class Handler:
    """Base of the per-layer-type handlers. Subclasses override :meth:`join` and, when the layer holds
    tensors indexed by channels, :meth:`slots` (and :attr:`size_attrs` / :meth:`resize`)."""

    #: roles this layer's tensors are indexed by (empty: the layer holds no channel-indexed tensor)
    roles: tuple[str, ...] = ()
    #: its "channel" role follows channels produced elsewhere (a norm, per-channel slopes); a depthwise
    #: conv's produces them
    follows: bool = False
    #: per role, the module attributes that hold that role's channel count (set by :meth:`resize`)
    size_attrs: dict[str, tuple[str, ...]] = {}

    def join(self, graph: "ChannelGraph", node, name: str, module: nn.Module) -> None:
        """Read the channels of ``node``'s input (``graph.channels_in``), record how this layer uses them
        (``graph.use``, ``graph.produce``, ``graph.add_layer``, ``graph.lock``) and set the channels of its
        output (``graph.emit``)."""
        raise NotImplementedError

    def slots(self, module: nn.Module, role: str) -> Sequence[tuple[str, int]]:
        """``(attribute, dim)`` of every tensor indexed by ``role``; the weight (the tensor criteria score)
        comes first. Attributes that are None on this module are passed over."""
        return ()

    def resize(self, module: nn.Module, sizes: dict[str, int]) -> None:
        """Update the module's size attributes after slicing; ``sizes``: role -> channels kept."""
        for role, n in sizes.items():
            for attr in self.size_attrs.get(role, ()):
                if hasattr(module, attr):
                    setattr(module, attr, n)

    # ----- Torch-Pruning's vocabulary, built on slots() and resize()
    def channels(self, module: nn.Module, role: str) -> int:
        for attr, dim in self.slots(module, role):
            t = getattr(module, attr, None)
            if t is not None:
                return int(t.shape[dim])
        raise ModelError(f"{type(module).__name__} has no tensor indexed by its {role!r} channels")

    def get_out_channels(self, module: nn.Module) -> int:
        return self.channels(module, "out" if "out" in self.roles else "channel")

    def get_in_channels(self, module: nn.Module) -> int:
        return self.channels(module, "in" if "in" in self.roles else "channel")

    def sliced(self, module: nn.Module, keep: dict[str, Sequence[int]]) -> dict[str, torch.Tensor]:
        """The module's tensors with only the ``keep`` indices of each role (nothing is changed yet)."""
        out: dict[str, torch.Tensor] = {}
        for role, idx in keep.items():
            index = torch.as_tensor(list(idx), dtype=torch.long)
            for attr, dim in self.slots(module, role):
                t = out.get(attr, getattr(module, attr, None))
                if t is not None:
                    out[attr] = t.detach().index_select(dim, index.to(t.device)).clone()
        return out

    @torch.no_grad()
    def prune(self, module: nn.Module, keep: dict[str, Sequence[int]],
              tensors: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """Keep only the ``keep`` indices of each role, in place (``tensors``: from :meth:`sliced`)."""
        tensors = self.sliced(module, keep) if tensors is None else tensors
        for attr, t in tensors.items():
            old = getattr(module, attr)
            setattr(module, attr, nn.Parameter(t, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter)
                    else t)
        self.resize(module, {role: len(idx) for role, idx in keep.items()})
        return module

    def prune_out_channels(self, module: nn.Module, keep: Sequence[int]) -> nn.Module:
        return self.prune(module, {"out" if "out" in self.roles else "channel": keep})

    def prune_in_channels(self, module: nn.Module, keep: Sequence[int]) -> nn.Module:
        return self.prune(module, {"in" if "in" in self.roles else "channel": keep})


class LinearHandler(Handler):
    """A dense layer on the last dim: weight rows are its outputs, columns its inputs (``nn.Linear``, or
    any module with ``weight`` (out, in) and an optional ``bias``)."""

    roles = ("in", "out")
    size_attrs = {"in": ("in_features",), "out": ("out_features",)}

    def slots(self, module, role):
        return {"out": (("weight", 0), ("bias", 0)), "in": (("weight", 1),)}[role]

    def join(self, graph, node, name, module):
        shape = graph.shape(node)
        last = len(shape) - 1
        labels, _ = graph.channels_in(node, dim=last, size=self.get_in_channels(module))
        out = graph.produce(name, self.get_out_channels(module))
        graph.use(name, "in", labels)
        graph.use(name, "out", out)
        graph.add_layer(node, name, labels, out, kernel=1, spatial=math.prod(shape[1:-1]),
                        bias=getattr(module, "bias", None) is not None)
        graph.emit(node, out, last)


class ConvHandler(Handler):
    """Convolutions: filters produce channels on dim 1. A depthwise conv follows its channels (one in, one
    out); other grouped convs tie channels to their group and are locked whole."""

    roles = ("in", "out", "channel")
    size_attrs = {"in": ("in_channels",), "out": ("out_channels",), "channel": ("in_channels", "out_channels", "groups")}
    transposed = False

    def slots(self, module, role):
        out_dim, in_dim = (1, 0) if self.transposed else (0, 1)
        return {"out": (("weight", out_dim), ("bias", 0)), "in": (("weight", in_dim),),
                "channel": (("weight", 0), ("bias", 0))}[role]

    def join(self, graph, node, name, module):
        labels, _ = graph.channels_in(node, dim=1, size=module.in_channels)
        kernel, spatial = math.prod(module.kernel_size), math.prod(graph.shape(node)[2:])
        bias = module.bias is not None
        if module.groups == 1:
            out = graph.produce(name, module.out_channels)
            graph.use(name, "in", labels)
            graph.use(name, "out", out)
            graph.add_layer(node, name, labels, out, kernel, spatial, bias)
        elif module.groups == module.in_channels == module.out_channels and not self.transposed:
            out = labels  # depthwise: one channel in, one out
            graph.use(name, "channel", labels)
            graph.add_layer(node, name, None, labels, kernel, spatial, bias)
        else:  # grouped: channels are tied to their group; keep both sides whole
            graph.lock(labels)
            out = graph.produce(name, module.out_channels, locked=True)
        graph.emit(node, out, 1)


class ConvTransposeHandler(ConvHandler):
    """Transposed convolutions: the weight is (in, out / groups, ...)."""

    transposed = True


class NormHandler(Handler):
    """Per-channel norms (BatchNorm on dim 1; LayerNorm over the last dim alone): they follow the channels,
    and their vectors (and running statistics) are sliced with them."""

    roles = ("channel",)
    follows = True
    size_attrs = {"channel": ("num_features",)}

    def __init__(self, dim: int = 1, buffers: tuple[str, ...] = ("running_mean", "running_var")):
        self.dim, self.buffers = dim, buffers

    def slots(self, module, role):
        return (("weight", 0), ("bias", 0), *((b, 0) for b in self.buffers))

    def join(self, graph, node, name, module):
        dim = self.dim % len(graph.shape(node))
        labels, cdim = graph.channels_in(node, dim=dim, size=self.get_in_channels(module))
        graph.use(name, "channel", labels)
        graph.mark_normed(node)
        graph.emit(node, labels, cdim)


class LayerNormHandler(NormHandler):
    """LayerNorm normalising the channels alone is prunable (the statistics then cover the kept channels);
    over more dims it mixes channels and locks them."""

    def __init__(self):
        super().__init__(dim=-1, buffers=())

    def join(self, graph, node, name, module):
        labels, cdim = graph.channels_in(node)
        if tuple(module.normalized_shape) == (len(labels),) and cdim == len(graph.shape(node)) - 1:
            if module.weight is not None:
                graph.use(name, "channel", labels)
                graph.mark_normed(node)
        else:
            graph.lock(labels)
        graph.emit(node, labels, cdim)

    def get_in_channels(self, module):
        return int(module.normalized_shape[-1])

    def resize(self, module, sizes):
        module.normalized_shape = (sizes["channel"],)


class PReLUHandler(NormHandler):
    """PReLU: one slope per channel follows the channels; a single shared slope passes them through."""

    size_attrs = {"channel": ("num_parameters",)}

    def __init__(self):
        super().__init__(dim=1, buffers=())

    def slots(self, module, role):
        return (("weight", 0),)

    def join(self, graph, node, name, module):
        if module.num_parameters == 1:
            PASS.join(graph, node, name, module)
        else:
            labels, cdim = graph.channels_in(node, dim=1, size=module.num_parameters)
            graph.use(name, "channel", labels)
            graph.emit(node, labels, cdim)


class PassHandler(Handler):
    """Elementwise and spatial layers (activations, dropout, pooling, padding): channels pass through."""

    def join(self, graph, node, name, module):
        graph.follow(node, *graph.channels_in(node))


class FlattenHandler(Handler):
    """Flatten: each channel covers the positions it flattens to (followed by ``graph.reshape``)."""

    def join(self, graph, node, name, module):
        graph.reshape(node, *graph.channels_in(node))


class LockHandler(Handler):
    """Layers that mix channels (softmax, GroupNorm, InstanceNorm, LRN) and opaque layers: their input
    channels are locked, and so are their output channels."""

    def join(self, graph, node, name, module):
        labels, cdim = graph.channels_in(node)
        graph.lock(labels)
        shape = graph.shape(node)
        if shape is not None and len(shape) > cdim and shape[cdim] == len(labels):
            graph.emit(node, labels, cdim)
        elif shape is not None and len(shape) >= 2:  # the channels changed: new ones, locked
            dim = cdim if cdim < len(shape) else len(shape) - 1
            graph.emit(node, graph.produce(name, shape[dim], locked=True), dim)


PASS, LOCK = PassHandler(), LockHandler()


def register_handler(layer_types: type | Sequence[type], handler: Handler) -> Handler:
    """Handle every module of ``layer_types`` (and their subclasses) with ``handler``; a later registration
    for the same type replaces the earlier one. Returns ``handler``."""
    types = (layer_types,) if isinstance(layer_types, type) else tuple(layer_types)
    if not isinstance(handler, Handler):
        raise ConfigError(f"register_handler needs a Handler instance (a subclass of netcompress.graph.Handler), "
                          f"got {type(handler).__name__}")
    for t in types:
        if not (isinstance(t, type) and issubclass(t, nn.Module)):
            raise ConfigError(f"register_handler: {t!r} is not an nn.Module subclass")
        _HANDLERS[t] = handler
    return handler


def handler_for(module: nn.Module) -> Handler | None:
    """The handler of ``module``'s type (the nearest registered class in its MRO), or None."""
    for cls in type(module).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    return None


def handled_types() -> tuple[type, ...]:
    """The registered layer types that hold channel-indexed tensors (what structured pruning supports)."""
    return tuple(t for t, h in _HANDLERS.items() if h.roles)


def is_opaque(module: nn.Module) -> bool:
    """A layer holding parameters of its own, with no sub-modules and no handler: the graph leaves it alone."""
    return (handler_for(module) is None and next(module.children(), None) is None
            and next(module.parameters(recurse=False), None) is not None)


_BN = nn.modules.batchnorm._BatchNorm
register_handler(nn.Linear, LinearHandler())
register_handler((nn.Conv1d, nn.Conv2d, nn.Conv3d), ConvHandler())
register_handler((nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d), ConvTransposeHandler())
register_handler(_BN, NormHandler())
register_handler(nn.LayerNorm, LayerNormHandler())
register_handler(nn.PReLU, PReLUHandler())
register_handler(nn.Flatten, FlattenHandler())
register_handler((nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
                  nn.LeakyReLU, nn.ELU, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
                  nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                  nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                  nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, nn.ZeroPad2d, nn.ConstantPad2d), PASS)
register_handler((nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.Softmax, nn.LogSoftmax,
                  nn.LocalResponseNorm), LOCK)
