"""Pruning criteria, unstructured and structured alike: each is a frozen config with one method,
``scores(model, targets, data, loss_fn)``, returning one importance tensor per target weight (its shape,
or with leading per-batch dims; higher = keep). Scope, granularity and schedule are separate arguments, so
every criterion composes with every one of them.

A set of weights -- a neuron's row, a channel's slices in every layer that shares it -- scores
``reduce(parts)``, where each part sums the set's per-weight scores in one layer; ``votes`` says which
layers' weights count for a channel (by default those producing it). A single weight scores ``reduce([s])``.

>>> from torch import nn
>>> from .masks import Target
>>> lin = nn.Linear(3, 1)
>>> with torch.no_grad(): _ = lin.weight.copy_(torch.tensor([[0.5, -2.0, 1.0]]))
>>> Magnitude().scores(lin, [Target("", lin)])[0]
tensor([[0.5000, 2.0000, 1.0000]])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import Config, PositiveFloat, PositiveInt
from ..core.data import batch_size_of, check_data, forward, iter_batches
from ..core.errors import ConfigError
from .masks import Target

#: ``loss_fn(outputs, targets, inputs) -> scalar``, as the Trainer's (cross-entropy when None)
LossFn = Callable[[Any, torch.Tensor, Any], torch.Tensor]


class Criterion(Config):
    """The one scoring extension point. ``needs_data``/``needs_labels`` let callers validate before
    mutating; ``comparable``: raw channel scores rank across layers (Global scope normalises them per
    group otherwise); ``steps``: scores are recomputed that many times on the way to the target sparsity."""

    needs_data: bool = False
    needs_labels: bool = True
    comparable: bool = False
    steps: int = 1

    def scores(self, model: nn.Module, targets: Sequence[Target], data=None,
               loss_fn: LossFn | None = None) -> list[torch.Tensor]:
        raise NotImplementedError

    def scores_and_update(self, model, targets, data=None, loss_fn=None):
        """The scores, and a function ``update(new_masks)`` that moves the kept weights once the new masks
        are chosen (None: weights stay as they are; OBS compensates)."""
        return self.scores(model, targets, data, loss_fn), None

    def reduce(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """The score of a set of weights from its per-layer sums of per-weight scores."""
        return sum(parts)

    def votes(self, module: nn.Module, role: str, follows: bool) -> bool:
        """Whether ``module``'s weight, indexed by a channel in ``role``, counts towards the channel's score:
        by default the layers that produce it (filters; a depthwise conv), not its consumers or norms."""
        return role == "out" or (role == "channel" and not follows)

    def check(self, data) -> None:
        if self.needs_data:
            check_data(data, type(self).__name__, self.needs_labels)


@dataclass(frozen=True)
class Magnitude(Criterion):
    """|w|^p per weight; a set of weights (a neuron, a channel's filters) scores its L^p norm."""

    p: Literal[1, 2] = 1

    def scores(self, model, targets, data=None, loss_fn=None):
        return [t.effective().abs().pow(self.p) for t in targets]

    def reduce(self, parts):
        return sum(parts) if self.p == 1 else sum(parts).sqrt()


@dataclass(frozen=True)
class L1(Magnitude):
    """A channel's score is the L1 norm of the filters producing it (Li et al. 2017)."""

    p: Literal[1] = 1


@dataclass(frozen=True)
class L2(Magnitude):
    """A channel's score is the L2 norm of the filters producing it."""

    p: Literal[2] = 2


@dataclass(frozen=True)
class Random(Criterion):
    """Uniform random scores (the control every criterion must beat), seeded."""

    seed: int = 0

    def scores(self, model, targets, data=None, loss_fn=None):
        gen = torch.Generator().manual_seed(self.seed)
        return [torch.rand(t.original().shape, generator=gen).to(t.original().device) for t in targets]


def _loss(model, x, y, loss_fn: LossFn | None, temperature: float = 1.0) -> torch.Tensor:
    out = forward(model, x) / temperature
    return loss_fn(out, y, x) if loss_fn is not None else F.cross_entropy(out, y)


@dataclass(frozen=True)
class SNIP(Criterion):
    """Connection sensitivity |theta * dL/dtheta| (Lee et al. 2019), meant for initialisation."""

    samples: PositiveInt = 512
    batch_size: PositiveInt = 128
    needs_data = True

    def scores(self, model, targets, data=None, loss_fn=None):
        self.check(data)
        return [(t.effective() * g).abs() for t, g in zip(targets, _summed_grads(
            model, targets, data, loss_fn, max_samples=self.samples, batch_size=self.batch_size)[0])]


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
        g_stop, n = _summed_grads(model, targets, data, loss_fn, self.temperature, max_samples=self.samples,
                                  batch_size=self.batch_size)
        g_stop = [g / n for g in g_stop]
        with _eval_mode(model):
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


@dataclass(frozen=True)
class BNScale(Criterion):
    """|gamma| of the BatchNorms normalising each channel (network slimming, Liu et al. 2017), averaged over
    them. A group without a BatchNorm is never pruned by this criterion."""

    comparable = True

    def scores(self, model, targets, data=None, loss_fn=None):
        return [t.effective().abs() for t in targets]

    def reduce(self, parts):
        return sum(parts) / len(parts)

    def votes(self, module, role, follows):
        return role == "channel" and isinstance(module, nn.modules.batchnorm._BatchNorm)


@dataclass(frozen=True)
class Taylor(Criterion):
    """First-order Taylor (Molchanov et al. 2019): the loss change if a set of weights were removed,
    (sum of g * w over the set)^2 per mini-batch, summed over ``batches`` mini-batches of ``data``. The
    per-weight scores are g * w per batch (leading dim); a channel's set is every slice indexed by it
    (filters and norm scales)."""

    batches: PositiveInt = 8
    batch_size: PositiveInt = 64
    needs_data = True

    def scores(self, model, targets, data=None, loss_fn=None):
        self.check(data)
        per_batch = list(_batch_grads(model, targets, data, loss_fn, batch_size=self.batch_size,
                                      max_batches=self.batches, shuffle=True))
        return [torch.stack([t.effective() * g[i] for _, g in per_batch]) for i, t in enumerate(targets)]

    def reduce(self, parts):
        return sum(parts).pow(2).sum(0)

    def votes(self, module, role, follows):
        return role != "in"


def _batch_grads(model, targets, data, loss_fn, temperature: float = 1.0, **batching):
    """Per batch of ``data`` (in eval mode): its size and the gradients of its loss w.r.t. each target."""
    params = [t.original() for t in targets]
    with _eval_mode(model, params):
        for x, y in iter_batches(data, **batching):
            grads = torch.autograd.grad(_loss(model, x, y, loss_fn, temperature), params, allow_unused=True)
            yield batch_size_of(x), [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def _summed_grads(model, targets, data, loss_fn, temperature: float = 1.0, **batching):
    """(sum over batches of batch size x gradient, per target; samples seen)."""
    total, n = [torch.zeros_like(t.original()) for t in targets], 0
    for k, grads in _batch_grads(model, targets, data, loss_fn, temperature, **batching):
        n += k
        for acc, g in zip(total, grads):
            acc.add_(g, alpha=k)
    return total, n


class _eval_mode:
    """Score in eval mode (dropout off, BN statistics frozen) with autograd reaching ``params`` (frozen ones
    too), restoring the caller's mode and flags."""

    def __init__(self, model: nn.Module, params: Sequence[torch.Tensor] = ()):
        self.model, self.was, self.params = model, model.training, params
        self.flags = [p.requires_grad for p in params]

    def __enter__(self):
        self.model.eval()
        for p in self.params:
            p.requires_grad_(True)

    def __exit__(self, *exc):
        self.model.train(self.was)
        for p, f in zip(self.params, self.flags):
            p.requires_grad_(f)
