"""Static measurements: parameters, nonzeros, MACs per layer, bytes.

MACs are multiply-accumulates of convolutions, linear layers and matrix products (attention's
QK^T and AV included), counted by torch's own FlopCounterMode on the real forward pass (FLOPs / 2).
Bias additions and elementwise work (activations, norms, pooling) are listed apart as ``other_ops``."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..core.errors import ModelError

_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
                nn.LeakyReLU, nn.ELU, nn.Softmax)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    """Nonzero parameters; a masked (pruned) model is counted through its effective weights."""
    return sum(int(torch.count_nonzero(t)) for t in _effective_params(model))


def _effective_params(model: nn.Module):
    # nn.utils.parametrize keeps the original under .parametrizations; the attribute is the masked value
    from torch.nn.utils.parametrize import ParametrizationList

    seen = set()
    for mod in model.modules():
        if isinstance(mod, ParametrizationList):
            continue  # the raw original; its effective value is yielded through the owner below
        for name, p in list(mod.named_parameters(recurse=False)):
            if id(p) in seen:
                continue
            seen.add(id(p))
            yield p.detach()
        if hasattr(mod, "parametrizations"):
            for name in mod.parametrizations.keys():
                with torch.no_grad():
                    yield getattr(mod, name).detach()


def bytes_fp32(model: nn.Module) -> int:
    """Bytes of a dense fp32 copy of all parameters and floating-point buffers."""
    n = count_params(model) + sum(b.numel() for b in model.buffers() if b.is_floating_point())
    return 4 * n


@dataclass
class LayerStats:
    name: str
    type: str
    params: int
    nonzero_params: int
    macs: int
    other_ops: int
    output_shape: list[int] = field(default_factory=list)


@dataclass
class Analysis:
    """Per-layer table plus totals {params, nonzero_params, macs, other_ops, bytes_fp32}."""

    layers: list[LayerStats]
    totals: dict

    def to_dict(self) -> dict:
        return {"totals": self.totals, "layers": [asdict(layer) for layer in self.layers]}

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def to_table(self) -> str:
        head = f"{'layer':<32} {'type':<14} {'params':>10} {'nonzero':>10} {'MACs':>12} {'other':>10}  output"
        rows = [head, "-" * len(head)]
        for s in self.layers:
            rows.append(f"{s.name:<32} {s.type:<14} {s.params:>10,} {s.nonzero_params:>10,} {s.macs:>12,} "
                        f"{s.other_ops:>10,}  {tuple(s.output_shape)}")
        t = self.totals
        rows += ["-" * len(head),
                 f"{'total':<32} {'':<14} {t['params']:>10,} {t['nonzero_params']:>10,} {t['macs']:>12,} "
                 f"{t['other_ops']:>10,}",
                 f"dense fp32 bytes: {t['bytes_fp32']:,}"]
        return "\n".join(rows)


def _other_ops(mod: nn.Module, out: torch.Tensor) -> int:
    n = out.numel() if isinstance(out, torch.Tensor) else 0
    if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Linear)) and mod.bias is not None:
        return n  # one add per output element
    if isinstance(mod, _NORMS):
        return 2 * n  # scale and shift
    if isinstance(mod, _ELEMENTWISE + _POOLS):
        return n
    return 0


def run_forward(model: nn.Module, example_inputs, what: str = "model"):
    """Forward pass with a clear error when the input shape does not fit the model."""
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    try:
        with torch.no_grad():
            return model(*inputs)
    except (RuntimeError, ValueError, IndexError) as exc:
        shapes = [tuple(t.shape) for t in inputs if isinstance(t, torch.Tensor)]
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"input of shape {shapes[0] if len(shapes) == 1 else shapes} does not fit the {what} "
                         f"({first}); pass the input shape the model was built for") from None


def analyze(model: nn.Module, example_inputs) -> Analysis:
    """Count params, nonzeros and MACs per layer on one forward pass of ``example_inputs``.

    >>> from netcompress.models import lenet_300_100
    >>> analyze(lenet_300_100(), torch.zeros(1, 1, 28, 28)).totals["macs"]
    266200
    """
    was_training = model.training
    model.eval()
    outputs: dict[str, torch.Tensor] = {}
    other: dict[str, int] = {}
    hooks = []
    for name, mod in model.named_modules():
        if name and not list(mod.children()):
            def hook(m, args, out, name=name):
                out = out[0] if isinstance(out, (tuple, list)) else out
                outputs[name] = list(out.shape) if isinstance(out, torch.Tensor) else []
                other[name] = other.get(name, 0) + _other_ops(m, out)
            hooks.append(mod.register_forward_hook(hook))
    try:
        with FlopCounterMode(display=False) as counter:
            run_forward(model, example_inputs)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)

    # FlopCounterMode names are '<RootClass>.a.b' and count inclusively: take each module's own share
    root = type(model).__name__
    inclusive = {}
    for key, ops in counter.get_flop_counts().items():
        if key == "Global":
            continue
        name = key[len(root) + 1:] if key.startswith(root + ".") else ("" if key == root else key)
        inclusive[name] = sum(ops.values()) // 2
    modules = dict(model.named_modules())
    layers = []
    for name, mod in modules.items():
        children = [f"{name}.{c}" if name else c for c, _ in mod.named_children()]
        own_macs = inclusive.get(name, 0) - sum(inclusive.get(c, 0) for c in children)
        has_params = bool(list(mod.parameters(recurse=False))) or hasattr(mod, "parametrizations")
        is_leaf = not children
        if not (own_macs or (is_leaf and name in outputs) or has_params):
            continue
        params = _module_params(mod)
        nnz = _module_nonzero(mod)
        layers.append(LayerStats(name or root, type(mod).__name__, params, nnz, own_macs, other.get(name, 0),
                                 outputs.get(name, [])))
    totals = {"params": count_params(model), "nonzero_params": count_nonzero(model),
              "macs": sum(v for k, v in inclusive.items() if k == ""),
              "other_ops": sum(other.values()), "bytes_fp32": bytes_fp32(model)}
    if not totals["macs"]:
        totals["macs"] = sum(s.macs for s in layers)
    return Analysis(layers, totals)


def _module_params(mod: nn.Module) -> int:
    return sum(p.numel() for p in mod.parameters(recurse=False)) + sum(
        p.numel() for n, p in mod.named_parameters() if n.startswith("parametrizations."))


def _module_nonzero(mod: nn.Module) -> int:
    total = sum(int(torch.count_nonzero(p.detach())) for p in mod.parameters(recurse=False))
    if hasattr(mod, "parametrizations"):
        with torch.no_grad():
            total += sum(int(torch.count_nonzero(getattr(mod, k))) for k in mod.parametrizations.keys())
    return total
