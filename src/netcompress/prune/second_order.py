"""Second-order criteria from the empirical Fisher: OBD (diagonal) and OBS / WoodFisher (block inverse).

Both use the empirical Fisher F = 1/N sum_n g_n g_n^T of per-sample loss gradients g_n (true labels) as
the Hessian. At a trained optimum it approximates the Hessian (seed 003, WoodFisher) and, unlike the
exact Hessian diagonal, it is never negative, so OBD's saliency h_kk w_k^2 / 2 stays a valid ranking;
using the same matrix for OBD and OBS makes their comparison differ only by the off-diagonal terms and
the compensating update.

OBS keeps F^-1 block-diagonal (blocks of ``block_size`` consecutive weights of one layer, so memory is
``numel * block_size`` floats instead of ``numel^2``) and builds it by Woodbury updates: starting from
(lambda I)^-1, each chunk of k per-sample gradients U (B x k) adds U U^T / N via
F^-1 <- F^-1 - F^-1 U (N I_k + U^T F^-1 U)^-1 U^T F^-1. Removing the set Q of one block moves the
remaining weights by dw = -F^-1[:, Q] (F^-1[Q, Q])^-1 w_Q (the joint OBS update; for one weight it is
Hassibi & Stork's -w_q F^-1 e_q / [F^-1]_qq)."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import PositiveFloat, PositiveInt
from ..core.data import batch_size_of, iter_batches
from ..core.errors import ConfigError
from .criteria import Criterion, _eval_mode
from .masks import Target

log = logging.getLogger(__name__)

#: refuse a block inverse bigger than this (bytes); smaller blocks or fewer layers fit
MAX_INVERSE_BYTES = 6 * 2**30
#: samples per Woodbury update: a rank-k update solves a k x k system per block, cheap for small k
WOODBURY_RANK = 16


def _param_names(model: nn.Module, targets: Sequence[Target]) -> list[str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return [by_id[id(t.original())] for t in targets]


def per_sample_grads(model: nn.Module, targets: Sequence[Target], x: torch.Tensor, y: torch.Tensor,
                     loss_fn=None) -> list[torch.Tensor]:
    """Gradients of each sample's loss w.r.t. each target's original tensor: list of (B, *shape).

    torch.func vmap when the model allows it; a per-sample loop otherwise. Masked entries get zero."""
    loss_fn = loss_fn or F.cross_entropy
    names = _param_names(model, targets)
    try:
        from torch.func import functional_call, grad, vmap

        fixed = {n: p.detach() for n, p in model.named_parameters() if n not in names}
        fixed.update(dict(model.named_buffers()))

        def one(tp, xi, yi):
            out = functional_call(model, {**fixed, **tp}, (xi.unsqueeze(0),))
            return loss_fn(out, yi.unsqueeze(0))

        tp = {n: t.original().detach() for n, t in zip(names, targets)}
        g = vmap(grad(one), in_dims=(None, 0, 0))(tp, x, y)
        return [g[n] for n in names]
    except (RuntimeError, NotImplementedError) as exc:  # ops without a batching rule
        log.debug("vmap per-sample gradients failed (%s); looping over samples", exc)
        params = [t.original() for t in targets]
        out = [torch.empty(len(x), *p.shape, dtype=p.dtype, device=p.device) for p in params]
        for i in range(len(x)):
            g = torch.autograd.grad(loss_fn(model(x[i:i + 1]), y[i:i + 1]), params)
            for o, gi in zip(out, g):
                o[i] = gi
        return out


def _grad_chunks(model, targets, data, samples, chunk, loss_fn):
    with _eval_mode(model):
        for x, y in iter_batches(data, max_samples=samples, batch_size=chunk):
            yield len(x), [g.reshape(len(x), -1) for g in per_sample_grads(model, targets, x, y, loss_fn)]


def fisher_diagonal(model, targets, data, samples: int = 512, chunk: int = 64, loss_fn=None):
    """(diag of the empirical Fisher per target (flattened), number of samples used)."""
    diag = [torch.zeros(t.original().numel(), dtype=torch.float64) for t in targets]
    n = 0
    for k, grads in _grad_chunks(model, targets, data, samples, chunk, loss_fn):
        n += k
        for d, g in zip(diag, grads):
            d.add_(g.double().pow(2).sum(0))
    return [d / max(n, 1) for d in diag], n


@dataclass(frozen=True)
class OBD(Criterion):
    """Optimal Brain Damage (LeCun et al. 1990): saliency h_kk w_k^2 / 2 with h_kk the empirical Fisher
    diagonal (see the module docstring for why), from ``samples`` per-sample gradients."""

    samples: PositiveInt = 512
    chunk: PositiveInt = 64
    needs_data = True

    def scores(self, model, targets, data=None, loss_fn=None):
        self.check(data)
        diag, _ = fisher_diagonal(model, targets, data, self.samples, self.chunk, loss_fn)
        return [(d.reshape(t.original().shape).float() * t.effective().pow(2) / 2) for d, t in zip(diag, targets)]


class BlockInverse:
    """Block-diagonal F^-1 of one flattened tensor: ``inv`` is (n_blocks, B, B); the tail is padded."""

    def __init__(self, numel: int, block: int, damping: float, dtype=torch.float32):
        self.numel, self.block = numel, block
        self.n_blocks = math.ceil(numel / block)
        eye = torch.eye(block, dtype=dtype)
        self.inv = (eye / damping).repeat(self.n_blocks, 1, 1)

    @classmethod
    def from_fisher(cls, fisher: torch.Tensor, numel: int) -> "BlockInverse":
        """Invert damped Fisher blocks (n_blocks, B, B) by Cholesky."""
        out = cls.__new__(cls)
        out.numel, out.block, out.n_blocks = numel, fisher.shape[-1], fisher.shape[0]
        out.inv = torch.cholesky_inverse(torch.linalg.cholesky(fisher.double())).to(fisher.dtype)
        return out

    @staticmethod
    def split_like(v: torch.Tensor, numel: int, block: int) -> torch.Tensor:
        n_blocks = math.ceil(numel / block)
        return F.pad(v, (0, n_blocks * block - numel)).reshape(*v.shape[:-1], n_blocks, block)

    @staticmethod
    def merge_like(v: torch.Tensor, numel: int) -> torch.Tensor:
        return v.reshape(*v.shape[:-2], -1)[..., :numel]

    def split(self, v: torch.Tensor) -> torch.Tensor:
        """(..., numel) -> (..., n_blocks, B), zero-padded."""
        return self.split_like(v, self.numel, self.block)

    def merge(self, v: torch.Tensor) -> torch.Tensor:
        return self.merge_like(v, self.numel)

    def add(self, g: torch.Tensor, n_total: int) -> None:
        """Woodbury rank-k update with k per-sample gradients ``g`` (k, numel), each weighted 1/n_total."""
        u = self.split(g.to(self.inv.dtype)).permute(1, 2, 0)  # (n_blocks, B, k)
        fu = torch.bmm(self.inv, u)  # (n_blocks, B, k)
        k = u.shape[-1]
        m = torch.bmm(u.transpose(1, 2), fu) + n_total * torch.eye(k, dtype=u.dtype)  # (n_blocks, k, k)
        self.inv -= torch.bmm(fu, torch.linalg.solve(m, fu.transpose(1, 2)))

    def diag(self) -> torch.Tensor:
        return self.merge(torch.diagonal(self.inv, dim1=1, dim2=2))

    def update(self, w: torch.Tensor, prune: torch.Tensor) -> torch.Tensor:
        """The weight change removing the flat bool set ``prune`` from flat weights ``w`` (joint OBS)."""
        q = self.split(prune.to(torch.bool))
        rows = q.any(1).nonzero().squeeze(1)
        delta = torch.zeros(self.n_blocks, self.block, dtype=torch.float64)
        if len(rows):
            inv = self.inv[rows].double()  # (r, B, B)
            qm = q[rows].double()  # (r, B)
            a = inv * qm.unsqueeze(2) * qm.unsqueeze(1) + torch.diag_embed(1 - qm)
            x = torch.linalg.solve(a, (self.split(w.double())[rows] * qm).unsqueeze(2))  # (r, B, 1)
            delta[rows] = -torch.bmm(inv, x).squeeze(2)
        return self.merge(delta).to(w.dtype)


@dataclass(frozen=True)
class OBS(Criterion):
    """Optimal Brain Surgeon / WoodFisher: saliency w_q^2 / (2 [F^-1]_qq) from a block-diagonal inverse
    empirical Fisher, *and* the compensating update of the remaining weights (``update=False`` scores
    only). ``damping`` is relative to the layer's mean Fisher diagonal (lambda = damping * mean diag),
    so it means the same for any loss scale; ``steps`` recomputes F^-1 that many times on the way to
    the target sparsity (the update is only valid for small moves); ``samples`` per-sample gradients
    are streamed ``chunk`` at a time, memory is ``numel * block_size`` floats.

    ``woodbury=True`` builds F^-1 by the Woodbury updates themselves (WoodFisher's way; no block of F is
    ever formed); the default accumulates the damped block Fisher and inverts each block once by
    Cholesky: the same matrix (tested equal), several times cheaper on CPU when samples >> block_size."""

    block_size: PositiveInt = 64
    damping: PositiveFloat = 1e-3
    samples: PositiveInt = 512
    steps: PositiveInt = 4
    chunk: PositiveInt = 64
    update: bool = True
    woodbury: bool = False
    needs_data = True

    def inverse(self, model, targets, data, loss_fn=None) -> list[BlockInverse]:
        """Block inverse empirical Fisher of each target at the current weights (one pass over the samples)."""
        self.check(data)
        need = sum(t.original().numel() for t in targets) * self.block_size * 4
        if need > MAX_INVERSE_BYTES:
            raise ConfigError(f"OBS block inverse would need {need / 2**30:.1f} GiB; lower block_size="
                              f"{self.block_size} or prune fewer layers at once")
        n = sum(batch_size_of(x) for x, _ in iter_batches(data, max_samples=self.samples, batch_size=self.chunk))
        invs: list[BlockInverse] | None = None
        fishers: list[torch.Tensor] | None = None
        for _, grads in _grad_chunks(model, targets, data, self.samples, self.chunk, loss_fn):
            if self.woodbury:
                if invs is None:  # damping scale from the first chunk: Woodbury starts from (lambda I)^-1
                    invs = [BlockInverse(t.original().numel(), self.block_size, self._damping(t, g.pow(2).mean(0)))
                            for t, g in zip(targets, grads)]
                for inv, g in zip(invs, grads):
                    for i in range(0, len(g), WOODBURY_RANK):
                        inv.add(g[i:i + WOODBURY_RANK], n)
            else:
                if fishers is None:
                    fishers = [torch.zeros(math.ceil(t.original().numel() / self.block_size), self.block_size,
                                           self.block_size) for t in targets]
                for f, g, t in zip(fishers, grads, targets):
                    u = BlockInverse.split_like(g, t.original().numel(), self.block_size)  # (k, nb, B)
                    f.baddbmm_(u.permute(1, 2, 0), u.permute(1, 0, 2), alpha=1.0 / n)
        if self.woodbury:
            return invs
        out = []
        for f, t in zip(fishers, targets):
            diag = BlockInverse.merge_like(torch.diagonal(f, dim1=1, dim2=2), t.original().numel())
            lam = self._damping(t, diag)
            out.append(BlockInverse.from_fisher(f + lam * torch.eye(self.block_size), t.original().numel()))
        return out

    def _damping(self, t: Target, diag: torch.Tensor) -> float:
        keep = t.mask().reshape(-1)
        mean = float(diag[keep].mean()) if keep.any() else 0.0
        return max(self.damping * mean, 1e-12)

    def scores_from(self, invs: Sequence[BlockInverse], targets) -> list[torch.Tensor]:
        return [(t.effective().reshape(-1).pow(2) / (2 * inv.diag().clamp_min(1e-30))).reshape(t.original().shape)
                for inv, t in zip(invs, targets)]

    def scores(self, model, targets, data=None, loss_fn=None):
        return self.scores_from(self.inverse(model, targets, data, loss_fn), targets)

    def apply_update(self, invs: Sequence[BlockInverse], targets, new_masks: Sequence[torch.Tensor]) -> None:
        """Move the kept weights to compensate for the newly pruned ones (before the masks are set)."""
        if not self.update:
            return
        for inv, t, m in zip(invs, targets, new_masks):
            w = t.original()
            pruned = (t.mask() & ~m.bool()).reshape(-1)
            if not pruned.any():
                continue
            with torch.no_grad():
                w.add_(inv.update(t.effective().reshape(-1), pruned).reshape(w.shape))
