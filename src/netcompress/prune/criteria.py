"""Pruning criteria: each is a frozen config with one method, ``scores(model, targets, data)``, returning
one importance tensor per target (same shape as the weight; higher = keep). Scope, granularity and
schedule are separate arguments, so every criterion composes with every one of them.

>>> from torch import nn
>>> from .masks import Target
>>> lin = nn.Linear(3, 1)
>>> with torch.no_grad(): _ = lin.weight.copy_(torch.tensor([[0.5, -2.0, 1.0]]))
>>> Magnitude().scores(lin, [Target("", lin)])[0]
tensor([[0.5000, 2.0000, 1.0000]])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import Config, PositiveFloat, PositiveInt
from ..core.data import batch_size_of, check_data, forward, iter_batches
from ..core.errors import ConfigError
from .masks import Target

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Criterion(Config):
    """One-method extension point. ``needs_data``/``needs_labels`` let callers validate before mutating."""

    needs_data: bool = False
    needs_labels: bool = True

    def scores(self, model: nn.Module, targets: Sequence[Target], data=None,
               loss_fn: LossFn | None = None) -> list[torch.Tensor]:
        raise NotImplementedError

    def check(self, data) -> None:
        if self.needs_data:
            check_data(data, type(self).__name__, self.needs_labels)


@dataclass(frozen=True)
class Magnitude(Criterion):
    """|w|^p. ``p`` (1 or 2) only matters when scores are pooled (Neurons: row L1 vs L2 norm)."""

    p: Literal[1, 2] = 1

    def scores(self, model, targets, data=None, loss_fn=None):
        return [t.effective().abs().pow(self.p) for t in targets]


@dataclass(frozen=True)
class Random(Criterion):
    """Uniform random scores (the control every criterion must beat), seeded."""

    seed: int = 0

    def scores(self, model, targets, data=None, loss_fn=None):
        gen = torch.Generator().manual_seed(self.seed)
        return [torch.rand(t.original().shape, generator=gen).to(t.original().device) for t in targets]


def _loss(model, x, y, loss_fn: LossFn | None, temperature: float = 1.0) -> torch.Tensor:
    out = forward(model, x)
    return (loss_fn or F.cross_entropy)(out / temperature, y)


@dataclass(frozen=True)
class SNIP(Criterion):
    """Connection sensitivity |theta * dL/dtheta| (Lee et al. 2019), meant for initialisation."""

    samples: PositiveInt = 512
    batch_size: PositiveInt = 128
    needs_data = True

    def scores(self, model, targets, data=None, loss_fn=None):
        self.check(data)
        params = [t.original() for t in targets]
        grads = [torch.zeros_like(p) for p in params]
        with _eval_mode(model):
            for x, y in iter_batches(data, max_samples=self.samples, batch_size=self.batch_size):
                g = torch.autograd.grad(_loss(model, x, y, loss_fn), params)
                for acc, gi in zip(grads, g):
                    acc.add_(gi, alpha=batch_size_of(x))
        return [(t.effective() * g).abs() for t, g in zip(targets, grads)]


@dataclass(frozen=True)
class GraSP(Criterion):
    """Gradient signal preservation (Wang et al. 2020): S = -theta * Hg; GraSP removes the largest S, so
    the keep-score returned here is ``theta * Hg``. Hg is a Hessian-gradient product by double backprop
    of ``g . stop_grad(g)``; logits are divided by ``temperature`` as in the paper's code."""

    samples: PositiveInt = 512
    batch_size: PositiveInt = 128
    temperature: PositiveFloat = 200.0
    needs_data = True

    def scores(self, model, targets, data=None, loss_fn=None):
        self.check(data)
        params = [t.original() for t in targets]
        with _eval_mode(model):
            g_stop = [torch.zeros_like(p) for p in params]
            for x, y in iter_batches(data, max_samples=self.samples, batch_size=self.batch_size):
                g = torch.autograd.grad(_loss(model, x, y, loss_fn, self.temperature), params)
                for acc, gi in zip(g_stop, g):
                    acc.add_(gi, alpha=batch_size_of(x))
            n = sum(batch_size_of(x) for x, _ in iter_batches(data, max_samples=self.samples, batch_size=self.batch_size))
            g_stop = [g / n for g in g_stop]
            hg = [torch.zeros_like(p) for p in params]
            for x, y in iter_batches(data, max_samples=self.samples, batch_size=self.batch_size):
                g = torch.autograd.grad(_loss(model, x, y, loss_fn, self.temperature), params, create_graph=True)
                z = sum((gi * gs).sum() for gi, gs in zip(g, g_stop))
                for acc, h in zip(hg, torch.autograd.grad(z, params)):
                    acc.add_(h, alpha=batch_size_of(x) / n)
        return [t.effective() * h for t, h in zip(targets, hg)]


@dataclass(frozen=True)
class APoZ(Criterion):
    """Neuron pruning by activation: score of a unit = 1 - average percentage of zeros of its
    output after the ReLU that follows it (measured as outputs <= 0), over ``samples`` inputs.
    Scores are per unit (broadcast over its row): use it with ``granularity=Neurons()``."""

    samples: PositiveInt = 1024
    batch_size: PositiveInt = 256
    needs_data = True
    needs_labels = False

    def scores(self, model, targets, data=None, loss_fn=None):
        self.check(data)
        zeros = [None] * len(targets)
        counts = [0] * len(targets)

        def hook_for(i):
            def hook(mod, args, out):
                z = (out.detach() <= 0).float()
                z = z.transpose(0, 1).reshape(z.shape[1], -1)  # (units, B * spatial)
                zeros[i] = z.sum(1) if zeros[i] is None else zeros[i] + z.sum(1)
                counts[i] += z.shape[1]
            return hook

        hooks = [t.module.register_forward_hook(hook_for(i)) for i, t in enumerate(targets)]
        try:
            with _eval_mode(model), torch.no_grad():
                for x, _ in iter_batches(data, max_samples=self.samples, batch_size=self.batch_size):
                    forward(model, x)
        finally:
            for h in hooks:
                h.remove()
        out = []
        for t, z, c in zip(targets, zeros, counts):
            w = t.original()
            if z is None:
                raise ConfigError(f"APoZ saw no output from layer {t.name!r}: is it used in forward()?")
            apoz = z / c  # (units,)
            out.append((1 - apoz).reshape(-1, *([1] * (w.dim() - 1))).expand_as(w).clone())
        return out


class _eval_mode:
    """Score in eval mode (dropout off, BN statistics frozen), restoring the caller's mode."""

    def __init__(self, model: nn.Module):
        self.model, self.was = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was)
