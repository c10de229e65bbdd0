"""Replace Linear/Conv2d layers by products of thinner standard layers (truncated SVD, Tucker-2).

The replacements are plain ``nn.Sequential`` blocks of ``nn.Linear`` / ``nn.Conv2d``, so everything
downstream (fine-tuning, structured and unstructured pruning, quantization, ONNX export, size and MAC
counting) treats them like any other layer. Every factor is computed before the first module is
swapped, so a failing call leaves the model untouched.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from torch.nn.utils import parametrize

from ..core.data import check_data, forward, iter_inputs
from ..core.errors import ConfigError, ModelError
from ..core.modules import replace_module
from ..core.report import Report
from ..core.select import Skip
from ..core.verbs import Verb
from .config import SVD, DecomposeConfig, Tucker2

log = logging.getLogger(__name__)
DECOMPOSE = Verb("decompose_", "decompose", DecomposeConfig,
                 "Factor layers into thinner ones: truncated SVD, Tucker-2, depthwise-separable.")


@dataclass(frozen=True)
class Factored:
    """What happened to one layer: its ranks and its weight count before and after."""

    name: str
    kind: str  # "svd" | "tucker2"
    ranks: tuple[int, ...]
    params_before: int
    params_after: int


def decompose_(model: nn.Module, config: DecomposeConfig, *, data=None, example_inputs=None) -> Report:
    """Factor the selected layers of ``model`` in place as ``config`` (``SVD``, ``Tucker2``,
    ``DepthwiseSeparable``) says. The report holds one :class:`Factored` per replaced layer in
    ``details["factored"]``; ``data`` is needed by ``SVD(data_aware=True)``."""
    return DECOMPOSE(model, config, data=data, example_inputs=example_inputs)


# ------------------------------------------------------------------------------------ helpers

def _matrix(layer: nn.Module) -> torch.Tensor:
    w = layer.weight.detach()
    return w.reshape(w.shape[0], -1).double()  # (out, d)


def candidates(model: nn.Module, config: DecomposeConfig, kinds: tuple[type, ...], report,
               spatial: bool = False) -> list:
    """The selected layers of ``kinds`` that can be factored (grouped convs, and 1x1 convs where ``spatial``
    kernels are needed, are skipped with the reason into ``report``); a layer carrying a mask or quantizer is
    an error (its zeros or grid would be lost)."""
    chosen = []
    for name, layer in config.select(model, kinds, report):
        if parametrize.is_parametrized(layer, "weight"):
            raise ModelError(f"layer {name!r} carries a parametrization (a pruning mask or quantizer): factoring "
                             "it would lose it. Decompose first, or bake it (netcompress.prune.bake_(model))")
        if isinstance(layer, nn.Conv2d) and layer.groups != 1:
            report.skipped.append(Skip(name, type(layer).__name__, "grouped/depthwise conv: already factored"))
            continue
        if isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and spatial:
            report.skipped.append(Skip(name, type(layer).__name__, "1x1 conv: a matrix, use SVD"))
            continue
        chosen.append((name, layer))
    return chosen


def _rank_from_energy(s: torch.Tensor, energy: float) -> int:
    share = torch.cumsum(s ** 2, 0) / (s ** 2).sum().clamp_min(1e-300)
    return int(torch.searchsorted(share, torch.tensor(energy - 1e-12, dtype=share.dtype)).item()) + 1


def _conv_patches(layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The (N*L, in*kh*kw) input patches the conv multiplies its weight matrix with."""
    mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
    x = F.pad(x, layer._reversed_padding_repeated_twice, mode=mode)  # the padding conv itself applies
    cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation, stride=layer.stride)  # (N, d, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


@torch.no_grad()
def _input_second_moments(model: nn.Module, layers: list[tuple[str, nn.Module]], data, samples: int) -> dict:
    """E[x x^T] of every layer's input vectors over up to ``samples`` examples of ``data``."""
    sums = {name: None for name, _ in layers}
    counts = dict.fromkeys(sums, 0)

    def hook(name, layer):
        def fn(_module, inputs, _output):
            x = inputs[0].detach()
            v = _conv_patches(layer, x) if isinstance(layer, nn.Conv2d) else x.reshape(-1, x.shape[-1])
            v = v.double()
            sums[name] = v.T @ v if sums[name] is None else sums[name] + v.T @ v
            counts[name] += v.shape[0]
        return fn

    handles = [layer.register_forward_hook(hook(name, layer)) for name, layer in layers]
    was_training = model.training
    model.eval()
    try:
        for x in iter_inputs(data, max_samples=samples):
            forward(model, x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if any(c == 0 for c in counts.values()):
        raise ConfigError("data_aware=True: the data gave no samples; pass at least one batch")
    return {name: sums[name] / counts[name] for name in sums}


def _whitener(moment: torch.Tensor) -> torch.Tensor:
    """L with L L^T = E[x x^T] (+ a little damping so unused inputs do not make it singular)."""
    vals, vecs = torch.linalg.eigh(moment)
    vals = vals.clamp_min(0) + 1e-6 * vals.clamp_min(0).mean().clamp_min(1e-12)
    return vecs * vals.sqrt()


# ---------------------------------------------------------------------------------------- SVD

def _svd_plan(w: torch.Tensor, config: SVD, moment: torch.Tensor | None) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(rank, first (r, d), second (out, r)) with second @ first ~ w."""
    out, d = w.shape
    if moment is None:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
    else:
        u, s, _ = torch.linalg.svd(w @ _whitener(moment), full_matrices=False)
    if config.rank is not None:
        r = config.rank
    elif config.energy is not None:
        r = _rank_from_energy(s, config.energy)
    else:
        r = max(1, math.floor(config.keep * out * d / (out + d)))
    r = min(r, len(s))
    if moment is None:  # balanced factors: both hold sqrt(s), which keeps their ranges alike for int8
        root = s[:r].sqrt()
        return r, root[:, None] * vh[:r], u[:, :r] * root
    ur = u[:, :r]  # best rank-r map in the metric of the inputs: project the outputs on ur
    return r, ur.T @ w, ur


def _svd_module(layer: nn.Module, first: torch.Tensor, second: torch.Tensor) -> nn.Sequential:
    r = first.shape[0]
    dtype, device = layer.weight.dtype, layer.weight.device
    if isinstance(layer, nn.Linear):
        a = nn.Linear(layer.in_features, r, bias=False)
        b = nn.Linear(r, layer.out_features, bias=layer.bias is not None)
        a.weight.data = first.to(dtype).reshape(a.weight.shape)
    else:
        a = nn.Conv2d(layer.in_channels, r, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                      dilation=layer.dilation, bias=False, padding_mode=layer.padding_mode)
        b = nn.Conv2d(r, layer.out_channels, 1, bias=layer.bias is not None)
        a.weight.data = first.to(dtype).reshape(a.weight.shape)
    b.weight.data = second.to(dtype).reshape(b.weight.shape)
    if layer.bias is not None:
        b.bias.data = layer.bias.detach().clone()
    return nn.Sequential(a, b).to(device)


@DECOMPOSE.register(SVD)
def _apply_svd(model: nn.Module, config: SVD, report, *, data=None, example_inputs=None) -> None:
    layers = candidates(model, config, (nn.Linear, nn.Conv2d), report)
    moments = {}
    if config.data_aware:
        check_data(data, "SVD(data_aware=True)", need_labels=False)
        moments = _input_second_moments(model, layers, data, config.samples)
    plans = []
    for name, layer in layers:
        w = _matrix(layer)
        r, first, second = _svd_plan(w, config, moments.get(name))
        before, after = w.numel(), r * sum(w.shape)
        if after < before * (1 - config.min_saving):
            plans.append((name, layer, first, second, Factored(name, "svd", (r,), before, after)))
        else:
            report.skipped.append(Skip(name, type(layer).__name__, f"rank {r} would not save weights"))
    swap(model, [(name, _svd_module(layer, a, b), rec) for name, layer, a, b, rec in plans], config, report)


# ------------------------------------------------------------------------------------ Tucker-2

def _tucker_ranks(w: torch.Tensor, config: Tucker2, s_out: torch.Tensor, s_in: torch.Tensor) -> tuple[int, int]:
    out, inp, kh, kw = w.shape
    if config.rank is not None:
        r_in, r_out = config.rank
    elif config.energy is not None:
        r_in, r_out = _rank_from_energy(s_in, config.energy), _rank_from_energy(s_out, config.energy)
    else:
        # weights at fraction t of both channel counts: t (in^2 + out^2) + t^2 in out k = keep * in out k
        k = kh * kw
        a, b, c = inp * out * k, inp ** 2 + out ** 2, -config.keep * inp * out * k
        t = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
        r_in, r_out = max(1, math.floor(t * inp)), max(1, math.floor(t * out))
    return min(r_in, inp), min(r_out, out)


def _tucker_module(layer: nn.Conv2d, u_in: torch.Tensor, core: torch.Tensor, u_out: torch.Tensor) -> nn.Sequential:
    dtype = layer.weight.dtype
    r_in, r_out = u_in.shape[1], u_out.shape[1]
    first = nn.Conv2d(layer.in_channels, r_in, 1, bias=False)
    middle = nn.Conv2d(r_in, r_out, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                       dilation=layer.dilation, bias=False, padding_mode=layer.padding_mode)
    last = nn.Conv2d(r_out, layer.out_channels, 1, bias=layer.bias is not None)
    first.weight.data = u_in.T.to(dtype)[:, :, None, None].contiguous()
    middle.weight.data = core.to(dtype).contiguous()
    last.weight.data = u_out.to(dtype)[:, :, None, None].contiguous()
    if layer.bias is not None:
        last.bias.data = layer.bias.detach().clone()
    return nn.Sequential(first, middle, last).to(layer.weight.device)


@DECOMPOSE.register(Tucker2)
def _apply_tucker2(model: nn.Module, config: Tucker2, report, *, data=None, example_inputs=None) -> None:
    plans = []
    for name, layer in candidates(model, config, (nn.Conv2d,), report, spatial=True):
        w = layer.weight.detach().double()  # (out, in, kh, kw)
        out, inp, kh, kw = w.shape
        u_out, s_out, _ = torch.linalg.svd(w.reshape(out, -1), full_matrices=False)
        u_in, s_in, _ = torch.linalg.svd(w.transpose(0, 1).reshape(inp, -1), full_matrices=False)
        r_in, r_out = _tucker_ranks(w, config, s_out, s_in)
        u_out, u_in = u_out[:, :r_out], u_in[:, :r_in]
        core = torch.einsum("oikl,or,is->rskl", w, u_out, u_in)  # (r_out, r_in, kh, kw)
        before = w.numel()
        after = inp * r_in + r_in * r_out * kh * kw + r_out * out
        if after < before * (1 - config.min_saving):
            plans.append((name, _tucker_module(layer, u_in, core, u_out),
                          Factored(name, "tucker2", (r_in, r_out), before, after)))
        else:
            report.skipped.append(Skip(name, type(layer).__name__, f"ranks {(r_in, r_out)} would not save weights"))
    swap(model, plans, config, report)


# --------------------------------------------------------------------------------------- swap

def swap(model: nn.Module, plans: list, config, report) -> None:
    """Put every planned replacement in place (all were computed first, so a failure changes nothing)."""
    if not plans:
        raise ConfigError(f"{type(config).__name__}: no selected layer gets smaller at these ranks "
                          f"({config}); lower the rank / energy / keep, or select other layers")
    for name, replacement, rec in plans:
        old = replace_module(model, name, replacement)
        report.change(name, old, f"{rec.kind} ranks {list(rec.ranks)}", {"params": rec.params_before},
                      {"params": rec.params_after})
        log.info("%s: %s ranks %s, weights %d -> %d", rec.name, rec.kind, rec.ranks, rec.params_before,
                 rec.params_after)
    report.details["factored"] = [rec for _, _, rec in plans]
