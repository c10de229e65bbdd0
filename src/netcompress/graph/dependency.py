"""Channel dependencies: which parameter slices must be removed together.

Every channel that a layer produces gets a global id. Tracing the model, each tensor carries the ids of
the channels along its channel dimension (``cdim``); layers and ops move, repeat, concatenate or merge them.
What a layer does is its handler's business (:mod:`netcompress.graph.handlers`, one registry users extend):

* conv / linear: consume the incoming ids (weight columns) and produce fresh ids (weight rows);
* BatchNorm, LayerNorm over the channels, depthwise conv: follow the ids (indexed on the same channels);
* a layer holding parameters with no handler is opaque: its input and output channels are locked;

and ops (functions and tensor methods) are followed here:

* add / mul / sub: the ids of both operands are the same channel, so they are unified (union-find);
* cat on the channel dim: the ids are concatenated (index offsets come for free);
* flatten -> Linear: each channel id is repeated over the spatial positions it covers;
* the model's inputs and outputs, and ops that mix channels (softmax over channels, a reduction over them,
  a raw parameter broadcast along them) lock their channels.

A *unit* is a set of unified ids (pruned together); a *group* is the set of units connected through
shared layers. An op or parameter-free layer the graph does not know raises a ModelError that names it:
a silently wrong shape is never produced.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from ..core.errors import ConfigError, ModelError
from ..core.registry import did_you_mean
from .handlers import LOCK, handler_for
from .plan import PrunePlan
from .trace import describe, shape_of, trace

_PASS_FUNCS = {F.relu, torch.relu, F.relu6, F.gelu, F.silu, F.elu, F.leaky_relu, F.hardswish, F.hardsigmoid,
               torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.dropout, F.dropout2d, torch.neg, operator.neg,
               F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d,
               F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.interpolate, F.pad, torch.clamp, torch.abs,
               torch.exp, F.mish}
_PASS_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "clamp", "clamp_", "abs", "neg",
                 "exp", "float", "to", "detach", "type_as"}
_BINARY_FUNCS = {operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
                 operator.truediv, torch.add, torch.sub, torch.mul, torch.div}
_BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
_RESHAPE_FUNCS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_RESHAPE_METHODS = {"flatten", "view", "reshape", "squeeze", "unsqueeze"}
_REDUCE = {"mean", "sum", "amax", "amin"}
_SOFTMAX = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, "softmax", "log_softmax"}


@dataclass
class Usage:
    """One parameterised module seen along the channel ids it is indexed by.

    role: "out" (weight rows of a producer), "in" (weight columns of a consumer), "channel" (per-channel
    vectors of a norm, or a depthwise conv indexed on its one channel axis)."""

    module: str
    role: str
    labels: np.ndarray  # (C,) global channel ids along the module's indexed axis


@dataclass
class Layer:
    """What a layer costs, for budget search: MACs = kept_out * kept_in * kernel * spatial (a depthwise
    layer, ``in_labels`` None, has one input channel per output channel)."""

    module: str
    in_labels: np.ndarray | None
    out_labels: np.ndarray
    kernel: int
    spatial: int
    bias: bool
    in_shape: tuple[int, ...] = ()  # (B, C, ...) of the example input, for building latency tables
    cdim: int = 1  # where the input carries its channels

    @property
    def depthwise(self) -> bool:
        return self.in_labels is None

    def kept(self, keep: np.ndarray | None = None) -> tuple[int, int]:
        """(input channels per output, output channels) left by the channel keep-mask ``keep``."""
        if keep is None:
            return (1 if self.depthwise else len(self.in_labels)), len(self.out_labels)
        return (1 if self.depthwise else int(keep[self.in_labels].sum())), int(keep[self.out_labels].sum())

    def macs(self, keep: np.ndarray | None = None) -> int:
        n_in, n_out = self.kept(keep)
        return n_out * n_in * self.kernel * self.spatial

    def params(self, keep: np.ndarray | None = None) -> int:
        n_in, n_out = self.kept(keep)
        return n_out * n_in * self.kernel + (n_out if self.bias else 0)


@dataclass
class Group:
    """Coupled channels: ``units[u]`` is the list of global channel ids removed together."""

    index: int
    units: list[np.ndarray]
    sources: list[str]
    members: list[tuple[str, str, list[np.ndarray]]] = field(default_factory=list)  # (module, role, positions per unit)

    def __len__(self) -> int:
        return len(self.units)

    def __repr__(self) -> str:
        mods = sorted({m for m, _, _ in self.members})
        return f"Group({self.index}, units={len(self.units)}, sources={self.sources}, modules={len(mods)})"


class ChannelGraph:
    """The channel-dependency graph of ``model`` on ``example_inputs``: build -> group -> apply.

    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 3))
    >>> g = ChannelGraph(m, torch.randn(2, 1, 6, 6))
    >>> [len(grp) for grp in g.groups]
    [8]
    >>> plan = g.plan(g.groups[0].units[0])   # remove channel 0 of the conv
    >>> _ = plan.apply(m)
    >>> m[0].out_channels, m[1].num_features, m[4].in_features
    (7, 7, 112)
    """

    def __init__(self, model: nn.Module, example_inputs, keep: tuple[str, ...] = ()):
        self.model = model
        self.gm = trace(model, example_inputs)
        self._modules = dict(model.named_modules())
        self._parent: list[int] = []
        self._locked: set[int] = set()
        self._sources: list[tuple[str, int, int]] = []  # (name, base id, size)
        self._source_of_module: dict[str, np.ndarray] = {}
        self.usages: list[Usage] = []
        self.layers: list[Layer] = []
        self.normed: set[str] = set()  # producers whose output goes straight into a norm (gates sit after it)
        self.opaque: dict[str, str] = {}  # layers with parameters and no handler: name -> type (channels locked)
        self.out_dim: dict[str, int] = {}  # layer -> the dim its output carries channels on
        self._labels: dict[fx.Node, tuple[np.ndarray, int]] = {}
        for node in self.gm.graph.nodes:
            self._visit(node)
        self._merge_shared_usages()
        for name in keep:
            self.lock_module(name)
        self._build_groups()

    # ----- union-find over channel ids
    def _new(self, name: str, size: int, locked: bool = False) -> np.ndarray:
        base = len(self._parent)
        self._parent.extend(range(base, base + size))
        self._sources.append((name, base, size))
        ids = np.arange(base, base + size)
        if locked:
            self._locked.update(ids.tolist())
        return ids

    def _find(self, a: int) -> int:
        parent = self._parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def _union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self._find(x), self._find(y)
            if rx != ry:
                self._parent[max(rx, ry)] = min(rx, ry)

    def _all_locked(self, ids: np.ndarray) -> bool:
        return all(i in self._locked for i in ids.tolist())

    # ----- what handlers call (see netcompress.graph.handlers)
    def shape(self, node: fx.Node) -> tuple[int, ...] | None:
        """The output shape of ``node`` on the example inputs."""
        return shape_of(node)

    def channels_in(self, node: fx.Node, dim: int | None = None, size: int | None = None) -> tuple[np.ndarray, int]:
        """(channel ids, channel dim) of ``node``'s first input. ``dim`` / ``size``: where and how many
        channels the layer expects; ids that are all locked are re-labelled to fit, anything else that does
        not fit is an error naming the node."""
        src = node.args[0] if node.args else None
        if not isinstance(src, fx.Node) or src not in self._labels:
            raise self.fail(node, "its input carries no channel information")
        labels, cdim = self._labels[src]
        s_in = shape_of(src)
        dim = None if dim is None else dim % len(s_in)
        if (dim is None or dim == cdim) and (size is None or size == len(labels)):
            return labels, cdim
        if self._all_locked(labels) and dim is not None and s_in[dim] == (size or s_in[dim]):
            return self._new(f"input:{node.name}", s_in[dim], locked=True), dim  # e.g. a (B, T, F) model input
        raise self.fail(node, f"expects {size} channels on dim {dim}")

    def produce(self, name: str, size: int, locked: bool = False) -> np.ndarray:
        """Fresh channel ids for the ``size`` outputs of layer ``name`` (the same ids at every call)."""
        if name not in self._source_of_module:
            self._source_of_module[name] = self._new(name, size, locked)
        return self._source_of_module[name]

    def use(self, name: str, role: str, labels: np.ndarray) -> None:
        """Layer ``name``'s tensors of ``role`` are indexed by these channel ids."""
        self.usages.append(Usage(name, role, labels))

    def add_layer(self, node: fx.Node, name: str, in_labels: np.ndarray | None, out_labels: np.ndarray,
                  kernel: int, spatial: int, bias: bool) -> None:
        """Record what layer ``name`` costs (see :class:`Layer`; ``in_labels`` None for depthwise)."""
        src = node.args[0]
        cdim = self._labels[src][1] if src in self._labels else 1
        self.layers.append(Layer(name, in_labels, out_labels, kernel, spatial, bias, shape_of(src), cdim))

    def lock(self, labels: np.ndarray) -> None:
        """These channels are never pruned."""
        self._locked.update(labels.tolist())

    def emit(self, node: fx.Node, labels: np.ndarray, cdim: int) -> None:
        """``node``'s output carries these channel ids on dim ``cdim``."""
        self._labels[node] = (labels, cdim)
        if node.op == "call_module":
            self.out_dim[node.target] = cdim

    def follow(self, node: fx.Node, labels: np.ndarray, cdim: int) -> None:
        """``node`` keeps its input's channels where they were (an error if their number changed)."""
        shape = shape_of(node)
        if shape is None or len(shape) <= cdim or shape[cdim] != len(labels):
            raise self.fail(node, "it changes the number of channels")
        self.emit(node, labels, cdim)

    def mark_normed(self, node: fx.Node) -> None:
        """``node`` normalises the output of the layer before it (channel gates then sit after the norm)."""
        src = node.args[0]
        if isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1:
            self.normed.add(src.target)

    def fail(self, node: fx.Node, why: str) -> ModelError:
        shapes = [shape_of(n) for n in self._labelled_inputs(node)]
        return ModelError(
            f"structured pruning cannot follow channels through {describe(node)}: {why} (input shapes {shapes}, "
            f"output shape {shape_of(node)}). Rewrite it with supported ops (conv, linear, norms, activations, "
            f"pooling, add/mul, cat, flatten/view), register a handler for the layer "
            f"(netcompress.graph.register_handler) or prune a sub-module that does not contain it")

    # ----- propagation
    def _arg_nodes(self, node: fx.Node) -> list[fx.Node]:
        out: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), lambda n: out.append(n))
        return out

    def _labelled_inputs(self, node: fx.Node) -> list[fx.Node]:
        return [n for n in self._arg_nodes(node) if n in self._labels]

    def _visit(self, node: fx.Node) -> None:
        shape = shape_of(node)
        if node.op == "placeholder":
            if shape is not None and len(shape) >= 2:
                self._labels[node] = (self._new(f"input:{node.name}", shape[1], locked=True), 1)
        elif node.op == "output":
            for n in self._arg_nodes(node):
                if n in self._labels:
                    self.lock(self._labels[n][0])
        elif node.op == "get_attr":
            pass  # raw parameters: an op mixing them with channels locks those channels (see _binary)
        elif node.op == "call_module":
            if self._labelled_inputs(node):
                self._call_module(node)
        elif shape is not None or self._labelled_inputs(node):
            self._call_function(node, shape)

    def _call_module(self, node: fx.Node) -> None:
        name, mod = node.target, self.gm.get_submodule(node.target)
        handler = handler_for(mod)
        if handler is None and next(mod.parameters(), None) is not None:  # a layer the graph cannot see into
            self.opaque[name] = type(mod).__name__
            handler = LOCK
        if handler is None:
            raise self.fail(node, f"{type(mod).__name__} is not a layer the graph knows")
        handler.join(self, node, name, mod)

    def _call_function(self, node: fx.Node, shape) -> None:
        fn = node.target
        is_method = node.op == "call_method"
        labelled = self._labelled_inputs(node)
        if not labelled:
            return  # shape arithmetic, constants: nothing to follow
        if shape is None:
            if is_method and fn in ("size", "dim") or fn in (getattr, len):
                return
            raise self.fail(node, "it returns something other than one tensor")
        if (fn in _PASS_FUNCS and not is_method) or (is_method and fn in _PASS_METHODS):
            labels, cdim = self.channels_in(node)
            self.follow(node, labels, cdim)
        elif (fn in _BINARY_FUNCS and not is_method) or (is_method and fn in _BINARY_METHODS):
            self._binary(node, shape)
        elif fn in (torch.cat, torch.concat):
            self._cat(node, shape)
        elif (fn in _RESHAPE_FUNCS and not is_method) or (is_method and fn in _RESHAPE_METHODS):
            labels, cdim = self.channels_in(node)
            self.reshape(node, labels, cdim)
        elif is_method and fn in _REDUCE or fn in (torch.mean, torch.sum, torch.amax):
            self._reduce(node, shape)
        elif fn in _SOFTMAX:
            labels, cdim = self.channels_in(node)
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
            if dim is None or dim % len(shape) == cdim:
                self.lock(labels)
            self.follow(node, labels, cdim)
        elif (is_method and fn in ("transpose", "permute")) or fn in (torch.transpose, torch.permute):
            self._permute(node, shape)
        else:
            name = fn if isinstance(fn, str) else getattr(fn, "__name__", str(fn))
            raise self.fail(node, f"the op {name!r} is not known to the graph")

    def _binary(self, node: fx.Node, shape) -> None:
        rank, aligned, cdim_out, lock_all = len(shape), [], None, False
        for arg in (node.args + tuple(node.kwargs.values()))[:2]:
            if not isinstance(arg, fx.Node):
                continue
            s = shape_of(arg)
            if arg in self._labels:
                labels, cdim = self._labels[arg]
                c_out = cdim + rank - len(s)  # broadcasting aligns from the right
                if len(labels) == shape[c_out]:
                    if cdim_out is not None and c_out != cdim_out:
                        raise self.fail(node, "its operands carry channels on different dims")
                    aligned.append(labels)
                    cdim_out = c_out
                else:  # a size-1 channel broadcast over all channels: ties them together
                    self.lock(labels)
                    lock_all = True
        if not aligned:
            raise self.fail(node, "no operand keeps the output's channels")
        for other in aligned[1:]:
            if len(other) != len(aligned[0]):
                raise self.fail(node, "operands disagree on the channel count")
            self._union(aligned[0], other)
        # a raw tensor (parameter, constant) with a channel axis cannot be sliced: keep those channels
        for arg in (node.args + tuple(node.kwargs.values()))[:2]:
            s = shape_of(arg) if isinstance(arg, fx.Node) else None
            if isinstance(arg, fx.Node) and arg not in self._labels and s is not None:
                c = cdim_out - (rank - len(s))
                if 0 <= c < len(s) and s[c] > 1:
                    lock_all = True
        if lock_all:
            for labels in aligned:
                self.lock(labels)
        self._labels[node] = (aligned[0], cdim_out)

    def _cat(self, node: fx.Node, shape) -> None:
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0) % len(shape)
        parts = []
        for t in tensors:
            if t in self._labels:
                labels, cdim = self._labels[t]
            else:  # a tensor from nowhere (constant): its channels are fixed
                s = shape_of(t)
                labels, cdim = self._new(f"const:{node.name}", s[dim] if dim == 1 else s[1], locked=True), 1
            parts.append((labels, cdim))
        cdims = {c for _, c in parts}
        if len(cdims) != 1:
            raise self.fail(node, "its inputs have their channels on different dims")
        cdim = cdims.pop()
        if dim == cdim:
            self._labels[node] = (np.concatenate([p for p, _ in parts]), cdim)
        else:  # cat along batch/space: the same channel index in every input
            for labels, _ in parts[1:]:
                self._union(parts[0][0], labels)
            self._labels[node] = (parts[0][0], cdim)

    def reshape(self, node: fx.Node, labels: np.ndarray, cdim: int) -> None:
        """``node`` reshapes its input: channels keep their dim, or each repeats over the positions it covers."""
        shape = shape_of(node)
        s_in = shape_of(node.args[0])
        pre, c, post = math.prod(s_in[:cdim]), s_in[cdim], math.prod(s_in[cdim + 1:])
        for k in range(len(shape)):
            if math.prod(shape[:k]) != pre:
                continue
            if shape[k] == c and math.prod(shape[k + 1:]) == post:
                self.emit(node, labels, k)
                return
            if shape[k] == c * post and math.prod(shape[k + 1:]) == 1:
                # flatten of (B, C, H, W) -> (B, C*H*W): each channel covers H*W consecutive features
                self.emit(node, np.repeat(labels, post), k)
                return
        raise self.fail(node, "it reshapes across the channel dim")

    def _reduce(self, node, shape) -> None:
        labels, cdim = self.channels_in(node)
        s_in = shape_of(node.args[0])
        dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        keepdim = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
        if dims is None:
            self.lock(labels)
            return
        dims = {d % len(s_in) for d in ((dims,) if isinstance(dims, int) else dims)}
        if cdim in dims:  # reducing over channels mixes them
            self.lock(labels)
            return
        new_cdim = cdim if keepdim else cdim - sum(d < cdim for d in dims)
        self.follow(node, labels, new_cdim)

    def _permute(self, node, shape) -> None:
        labels, cdim = self.channels_in(node)
        rank = len(shape)
        if node.target in ("transpose", torch.transpose):
            d0, d1 = (a % rank for a in node.args[1:3])
            new = d1 if cdim == d0 else d0 if cdim == d1 else cdim
        else:
            order = node.args[1:] if node.op == "call_method" else node.args[1]
            if len(order) == 1 and isinstance(order[0], (tuple, list)):
                order = order[0]
            new = [o % rank for o in order].index(cdim)
        self.follow(node, labels, new)

    # ----- grouping
    def _merge_shared_usages(self) -> None:
        """A module called twice must be pruned the same way at each call: unify its index sets."""
        seen: dict[tuple[str, str], Usage] = {}
        kept = []
        for u in self.usages:
            key = (u.module, u.role)
            if key in seen:
                self._union(seen[key].labels, u.labels)
            else:
                seen[key] = u
                kept.append(u)
        self.usages = kept
        layers: dict[str, Layer] = {}
        for layer in self.layers:  # a shared layer costs once per call
            if layer.module in layers:
                layers[layer.module].spatial += layer.spatial
            else:
                layers[layer.module] = layer
        self.layers = list(layers.values())
        self._followers = []  # (channel ids, parameters per channel) of the channel-following layers
        for u in self.usages:
            if u.role == "channel" and u.module not in layers:
                mod = self._modules[u.module]
                slots = handler_for(mod).slots(mod, "channel")
                per = sum(isinstance(getattr(mod, attr, None), nn.Parameter) for attr, _ in slots)
                self._followers.append((u.labels, per))

    def lock_module(self, name: str) -> None:
        """Never prune the channels that ``name`` (or the modules under it) produces or normalises."""
        hits = [u for u in self.usages if (u.module == name or u.module.startswith(name + ".")) and u.role != "in"]
        if not hits:
            if name not in self._modules:
                raise ConfigError(f"keep: layer {name!r} does not exist in {type(self.model).__name__}."
                                  f"{did_you_mean(name, list(self._modules))}")
            hits = [u for u in self.usages if u.module == name]
        for u in hits:
            self.lock(u.labels)

    def _build_groups(self) -> None:
        n = len(self._parent)
        roots = np.array([self._find(i) for i in range(n)], dtype=np.int64)
        locked_roots = {int(roots[i]) for i in self._locked}
        source_idx = np.empty(n, dtype=np.int64)
        for k, (_, base, size) in enumerate(self._sources):
            source_idx[base:base + size] = k
        # units: roots not locked; groups: units connected through shared sources
        unit_ids: dict[int, int] = {}
        for r in np.unique(roots).tolist():
            if r not in locked_roots:
                unit_ids[r] = len(unit_ids)
        self.unit_of = np.full(n, -1, dtype=np.int64)  # channel id -> unit (-1: locked)
        for i in range(n):
            self.unit_of[i] = unit_ids.get(int(roots[i]), -1)
        parent = list(range(len(self._sources)))

        def find(a):
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        first_source: dict[int, int] = {}
        for i in range(n):
            u = int(self.unit_of[i])
            if u < 0:
                continue
            s = int(source_idx[i])
            if u in first_source:
                a, b = find(first_source[u]), find(s)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                first_source[u] = s
        by_group: dict[int, list[int]] = {}
        for u, s in sorted(first_source.items()):
            by_group.setdefault(find(s), []).append(u)
        members_of_unit = [[] for _ in unit_ids]
        for i in range(n):
            if self.unit_of[i] >= 0:
                members_of_unit[self.unit_of[i]].append(i)
        self.groups: list[Group] = []
        self.group_of_unit = np.full(len(unit_ids), -1, dtype=np.int64)
        self.pos_in_group = np.full(len(unit_ids), -1, dtype=np.int64)
        for g, (root, units) in enumerate(sorted(by_group.items())):
            srcs = sorted({self._sources[int(source_idx[c])][0] for u in units for c in members_of_unit[u]})
            grp = Group(g, [np.array(members_of_unit[u]) for u in units], srcs)
            for k, u in enumerate(units):
                self.group_of_unit[u], self.pos_in_group[u] = g, k
            self.groups.append(grp)
        for usage in self.usages:
            units = self.unit_of[usage.labels]
            for g in np.unique(self.group_of_unit[units[units >= 0]]).tolist():
                grp = self.groups[g]
                positions = [np.empty(0, dtype=np.int64)] * len(grp)
                mask = (units >= 0) & (self.group_of_unit[np.maximum(units, 0)] == g)
                for pos in np.nonzero(mask)[0].tolist():
                    k = int(self.pos_in_group[units[pos]])
                    positions[k] = np.append(positions[k], pos)
                grp.members.append((usage.module, usage.role, positions))

    # ----- apply
    def channel_keep(self, pruned_units: np.ndarray | None = None) -> np.ndarray:
        """(n_channels,) bool: True where a channel survives, given a bool mask over units."""
        keep = np.ones(len(self._parent), dtype=bool)
        if pruned_units is not None:
            dropped = pruned_units[np.maximum(self.unit_of, 0)] & (self.unit_of >= 0)
            keep &= ~dropped
        return keep

    def plan(self, pruned_channels) -> PrunePlan:
        """The removal plan for these global channel ids (any unit's ids, or a concatenation of them)."""
        pruned = np.zeros(len(self._parent), dtype=bool)
        ids = np.asarray(pruned_channels, dtype=np.int64).reshape(-1)
        if len(ids):
            bad = ids[self.unit_of[ids] < 0]
            if len(bad):
                raise ConfigError(f"channels {bad[:5].tolist()} are locked (model input/output or kept layer)")
            units = np.unique(self.unit_of[ids])
            pruned_units = np.zeros(len(self.group_of_unit), dtype=bool)
            pruned_units[units] = True
            pruned = ~self.channel_keep(pruned_units)
        for name, base, size in self._sources:
            if size and pruned[base:base + size].all():
                raise ConfigError(f"pruning would remove every channel of {name!r}; keep at least one")
        modules: dict[str, dict[str, list[int]]] = {}
        for u in self.usages:
            keep = ~pruned[u.labels]
            if not keep.all():
                modules.setdefault(u.module, {})[u.role] = np.nonzero(keep)[0].tolist()
        return PrunePlan(modules=modules, dense=self.dense_shapes())

    def dense_shapes(self) -> dict[str, dict[str, int]]:
        shapes: dict[str, dict[str, int]] = {}
        for u in self.usages:
            shapes.setdefault(u.module, {})[u.role] = int(len(u.labels))
        return shapes

    def cost(self, pruned_units: np.ndarray | None = None) -> dict[str, int]:
        """Params and MACs of the traced layers (and the per-channel parameters of the norms following them)
        if ``pruned_units`` were removed."""
        keep = self.channel_keep(pruned_units)
        macs = sum(layer.macs(keep) for layer in self.layers)
        params = sum(layer.params(keep) for layer in self.layers)
        params += sum(per * int(keep[labels].sum()) for labels, per in self._followers)
        return {"macs": macs, "params": params}
