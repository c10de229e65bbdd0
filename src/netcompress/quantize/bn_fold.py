"""Fold BatchNorm into the preceding convolution / linear layer (eval-mode statistics).

w' = w * gamma / sqrt(var + eps) per output channel, b' = (b - mean) * gamma / sqrt(var + eps) + beta.
Found by tracing with torch.fx: a BN is folded only when its input is the output of a Conv/Linear
that nothing else reads (otherwise the un-normalised value is needed elsewhere).
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from ..core.errors import ModelError
from ..core.modules import replace_module

log = logging.getLogger(__name__)

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_LAYER = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def fold_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(layer name, bn name) pairs that can be folded."""
    import torch.fx as fx

    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:
        raise ModelError(f"cannot trace {type(model).__name__} to find Conv->BN pairs "
                         f"({str(exc).splitlines()[0]}); fold BN by hand or make forward traceable") from None
    mods = dict(gm.named_modules())
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), _BN):
            continue
        src = node.args[0]
        if (isinstance(src, fx.Node) and src.op == "call_module" and isinstance(mods.get(src.target), _LAYER)
                and len(src.users) == 1):
            pairs.append((src.target, node.target))
    return pairs


def fold_bn_(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every foldable BN into its layer in place (the BN becomes ``nn.Identity``); returns the pairs.

    >>> m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)).eval()
    >>> _ = m[1].running_mean.normal_(); _ = m[1].running_var.uniform_(0.5, 2)
    >>> x = torch.randn(2, 1, 8, 8); y = m(x)
    >>> fold_bn_(m)
    [('0', '1')]
    >>> bool(torch.allclose(m(x), y, atol=1e-5))
    True
    """
    if not any(isinstance(m, _BN) for m in model.modules()):
        return []  # nothing to fold: no need to trace (models that do not trace still quantize)
    pairs = fold_pairs(model)
    for layer_name, bn_name in pairs:
        layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
        with torch.no_grad():
            inv = 1 / torch.sqrt(bn.running_var + bn.eps)
            if bn.affine:
                inv = bn.weight * inv
            beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
            out_axis = 1 if isinstance(layer, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0
            shape = [1] * layer.weight.dim()
            shape[out_axis] = -1
            layer.weight.mul_(inv.reshape(shape))
            bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
            new_bias = (bias - bn.running_mean) * inv + beta
            if layer.bias is None:
                layer.bias = nn.Parameter(new_bias)
            else:
                layer.bias.copy_(new_bias)
        replace_module(model, bn_name, nn.Identity())
    log.info("folded %d BatchNorm layers", len(pairs))
    return pairs
