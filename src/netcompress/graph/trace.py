"""Tracing: torch.fx symbolic trace plus shape propagation, with errors that name what broke it."""
from __future__ import annotations


import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..core.errors import ModelError
from .handlers import handler_for, is_opaque


def _as_tuple(example_inputs) -> tuple:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    raise ModelError(f"example_inputs must be a tensor or a tuple of tensors, got {type(example_inputs).__name__}")


def _owner(exc: BaseException) -> str:
    """The innermost module's forward named in a traceback (where a trace failed)."""
    tb, where = exc.__traceback__, ""
    while tb is not None:
        code = tb.tb_frame.f_code
        self_obj = tb.tb_frame.f_locals.get("self")
        if code.co_name == "forward" and isinstance(self_obj, nn.Module):
            where = f"{type(self_obj).__name__}.forward (line {tb.tb_lineno})"
        tb = tb.tb_next
    return where


class _Tracer(fx.Tracer):
    """Layers with a handler, and opaque layers (parameters, no handler), are leaves: the graph takes them
    whole instead of tracing into their forward."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return super().is_leaf_module(m, qualname) or handler_for(m) is not None or is_opaque(m)


def trace(model: nn.Module, example_inputs) -> fx.GraphModule:
    """Symbolically trace ``model`` and annotate every node with its output shape.

    The returned GraphModule shares parameters with ``model``; module names (``node.target``) are the
    fully qualified names of ``model.named_modules()``.
    """
    args = _as_tuple(example_inputs)
    if any(hasattr(m, "parametrizations") for m in model.modules()):
        raise ModelError("the model carries torch.nn.utils.parametrize masks; remove them "
                         "(netcompress.prune.remove_masks or parametrize.remove_parametrizations) before "
                         "structured pruning")
    try:
        gm = fx.GraphModule(model, _Tracer().trace(model), type(model).__name__)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, RuntimeError...)
        where = _owner(exc)
        raise ModelError(
            f"torch.fx could not trace {type(model).__name__}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
            + (f" in {where}" if where else "")
            + "; data-dependent control flow or Python on tensor values is not traceable: rewrite that "
              "forward without it, or prune the traceable sub-module instead") from None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*args)
    except Exception as exc:
        raise ModelError(f"the traced {type(model).__name__} failed on example_inputs of shapes "
                         f"{[tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]}: {exc}") from None
    finally:
        model.train(was_training)
    return gm


def shape_of(node) -> tuple[int, ...] | None:
    """The output shape of a traced node, or None when it is not a tensor."""
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    if meta is None or not hasattr(meta, "shape"):
        return None
    return tuple(int(s) for s in meta.shape)


def describe(node: fx.Node) -> str:
    """A human name for a node: the op and the module or source line it came from."""
    if node.op == "call_module":
        return f"module {node.target!r}"
    target = getattr(node.target, "__name__", str(node.target))
    stack = node.meta.get("stack_trace") or ""
    line = stack.strip().splitlines()[-1].strip() if stack.strip() else ""
    return f"{node.op} {target!r} (node {node.name}{', ' + line if line else ''})"
