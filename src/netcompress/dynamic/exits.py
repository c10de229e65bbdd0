"""Early exits (dynamic computation): classifier heads after chosen layers of a trained backbone; at
inference a sample leaves at the first head confident enough, so easy inputs cost a fraction of the
network (BranchyNet-style).

Training keeps the model's output a plain logits tensor (the final head): the exits' losses are added
by the :class:`ExitLoss` trainer callback, so the usual trainer, distillation and checkpoints apply.
In eval mode the forward pass is dynamic: after each exit point the batch shrinks to the samples still
undecided, which is also how a device saves work at batch 1.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import Config, NonNegativeFloat, NonNegativeInt, Share
from ..core.data import first_inputs
from ..core.errors import ConfigError, ModelError
from ..core.verbs import Verb
from ..train.callbacks import Callback, CallbackConfig

log = logging.getLogger(__name__)


class ExitCriterion(Config):
    """One-method extension point: ``confident(logits) -> (B,) bool``, which samples leave at a head."""

    def confident(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class MaxProb(ExitCriterion):
    """Exit when the largest softmax probability reaches ``threshold``."""

    threshold: Share = 0.9

    def confident(self, logits: torch.Tensor) -> torch.Tensor:
        return F.softmax(logits.float(), dim=1).amax(dim=1) >= self.threshold


@dataclass(frozen=True)
class Entropy(ExitCriterion):
    """Exit when the softmax entropy (nats) is at most ``threshold``."""

    threshold: NonNegativeFloat = 0.3

    def confident(self, logits: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=1)
        return -(logp.exp() * logp).sum(dim=1) <= self.threshold


class _Exit(Exception):
    """Raised inside the backbone when every sample of the batch has left."""


def _head(shape: torch.Size, num_classes: int, width: int = 0) -> nn.Module:
    if len(shape) == 4 and width:  # (B, C, H, W): one strided conv first, as BranchyNet's branches
        return nn.Sequential(nn.Conv2d(shape[1], width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                             nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
    if len(shape) == 4:  # (B, C, H, W): pool then classify, the cheapest head that sees all channels
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(shape[1], num_classes))
    if len(shape) == 2:
        return nn.Linear(shape[1], num_classes)
    raise ModelError(f"an exit needs a (B, C, H, W) or (B, F) feature; got shape {tuple(shape)}")


class EarlyExitNet(nn.Module):
    """``backbone`` plus one classifier head after each module named in ``points``.

    ``example`` (one input batch) sizes the heads and checks that each point is a *cut* of the
    network: shrinking the batch there must not break anything downstream (a skip connection
    around the point would). ``head_width`` > 0 gives conv features a 3x3 stride-2 conv of that width
    before the pooled linear classifier (stronger early exits for a few more MACs)."""

    def __init__(self, backbone: nn.Module, points: Sequence[str], example: torch.Tensor,
                 criterion=MaxProb(0.9), head_width: int = 0):
        super().__init__()
        modules = dict(backbone.named_modules())
        missing = [p for p in points if p not in modules or p == ""]
        if missing or not points:
            names = ", ".join(n for n in modules if n and "." not in n)
            raise ConfigError(f"exit points {missing or list(points)} are not modules of the backbone; "
                              f"top-level modules: {names}")
        if len(set(points)) != len(points):
            raise ConfigError(f"exit points repeat: {list(points)}")
        self.backbone, self.points, self.criterion = backbone, list(points), criterion
        self.backbone_frozen = False
        feats, order = self._probe(example)
        if order != self.points:
            raise ConfigError(f"exit points must be listed in execution order; they run as {order}")
        with torch.no_grad():
            num_classes = backbone(example[:1]).shape[1]
        if not isinstance(head_width, int) or isinstance(head_width, bool) or head_width < 0:
            raise ConfigError(f"head_width must be an integer >= 0; got {head_width!r}")
        self.heads = nn.ModuleList(_head(feats[p].shape, num_classes, head_width) for p in self.points)
        self.exit_counts = torch.zeros(len(points) + 1, dtype=torch.long)  # filled by dynamic forwards
        self._check_cuts(example)

    @torch.no_grad()
    def _probe(self, x: torch.Tensor):
        feats, order = {}, []

        def record(point):
            def hook(_module, _inputs, output):
                feats[point] = output
                order.append(point)
            return hook

        handles = [dict(self.backbone.named_modules())[p].register_forward_hook(record(p)) for p in self.points]
        try:
            was = self.backbone.training
            self.backbone.eval()
            self.backbone(x[:2])
            self.backbone.train(was)
        finally:
            for h in handles:
                h.remove()
        order = list(dict.fromkeys(order))
        return feats, order

    @torch.no_grad()
    def _check_cuts(self, x: torch.Tensor) -> None:
        x = x[:1].expand(2, *x.shape[1:]).clone()
        for k, p in enumerate(self.points):
            handle = dict(self.backbone.named_modules())[p].register_forward_hook(lambda m, i, o: o[:1])
            try:
                was = self.backbone.training
                self.backbone.eval()
                out = self.backbone(x)
                self.backbone.train(was)
                ok = out.shape[0] == 1
            except RuntimeError:
                ok = False
            finally:
                handle.remove()
            if not ok:
                raise ModelError(f"exit point {p!r} is not a cut of the network: something downstream also "
                                 "uses tensors from before it (e.g. a skip connection), so samples cannot "
                                 "leave there; put the exit after the block that closes the skip")

    def train(self, mode: bool = True) -> "EarlyExitNet":
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()  # heads-only training must not move the backbone's BN statistics
        return self

    def reset_counts(self) -> None:
        self.exit_counts.zero_()

    # --------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or torch.is_grad_enabled():
            return self._all_exits(x)[-1]
        return self._dynamic(x)

    def all_exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every head and of the final layer, for every sample (no early leaving)."""
        return self._all_exits(x)

    def _all_exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        modules = dict(self.backbone.named_modules())
        handles = [modules[p].register_forward_hook(lambda m, i, o, k=k: outs.append(self.heads[k](o)))
                   for k, p in enumerate(self.points)]
        try:
            final = self.backbone(x)
        finally:
            for h in handles:
                h.remove()
        self.last_exit_logits = outs  # the ExitLoss callback reads these
        return [*outs, final]

    def _dynamic(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        result: list[torch.Tensor | None] = [None] * n
        alive = torch.arange(n)  # original indices of the samples still in the batch
        counts = torch.zeros(len(self.points) + 1, dtype=torch.long)

        def leave(k):
            def hook(_m, _i, out):
                nonlocal alive
                logits = self.heads[k](out)
                done = self.criterion.confident(logits)
                for j in done.nonzero().flatten().tolist():
                    result[int(alive[j])] = logits[j]
                counts[k] += int(done.sum())
                if bool(done.all()):
                    raise _Exit
                keep = ~done
                alive = alive[keep]
                return out[keep]
            return hook

        modules = dict(self.backbone.named_modules())
        handles = [modules[p].register_forward_hook(leave(k)) for k, p in enumerate(self.points)]
        try:
            final = self.backbone(x)
            for j, idx in enumerate(alive.tolist()):
                result[idx] = final[j]
            counts[-1] += len(alive)
        except _Exit:
            pass
        finally:
            for h in handles:
                h.remove()
        self.exit_counts += counts
        return torch.stack(result)


class ExitLoss(Callback):
    """Adds ``sum_k weights[k] * CE(exit_k, y)`` (the exits' heads, not the final output, which the
    trainer's loss covers) to the training loss."""

    def __init__(self, model: EarlyExitNet, weights: Sequence[float] | None = None):
        self.model = model
        self.weights = list(weights) if weights is not None else [1.0] * len(model.points)
        if len(self.weights) != len(model.points) or any(w < 0 for w in self.weights):
            raise ConfigError(f"ExitLoss needs one weight >= 0 per exit ({len(model.points)}); got {self.weights}")

    def extra_loss(self, trainer, inputs, outputs, targets):
        logits = getattr(self.model, "last_exit_logits", None)
        if not logits:
            return None
        return sum(w * F.cross_entropy(z, targets) for w, z in zip(self.weights, logits))


@dataclass(frozen=True)
class EarlyExits(Config):
    """Classifier heads after the modules named in ``points`` (in execution order); a sample leaves at the first
    head that ``criterion`` finds confident. ``head_width`` > 0 puts a 3x3 stride-2 conv of that width before
    the pooled linear classifier of conv features."""

    points: tuple[str, ...]
    criterion: ExitCriterion = MaxProb(0.9)
    head_width: NonNegativeInt = 0

    def validate(self):
        if not self.points:
            raise ConfigError("EarlyExits.points is empty; name the modules after which samples may leave")
        if len(set(self.points)) != len(self.points):
            raise ConfigError(f"EarlyExits.points repeat: {list(self.points)}")


EXITS = Verb("add_exits", "exits", EarlyExits, "Attach early-exit heads (the model becomes an EarlyExitNet).")


@EXITS.register(EarlyExits)
def _add_exits(model: nn.Module, config: EarlyExits, report, *, data=None, example_inputs=None) -> EarlyExitNet:
    if example_inputs is None:
        if data is None:
            raise ConfigError("add_exits sizes the heads on an example batch: pass example_inputs= or data=")
        example_inputs = first_inputs(data, 2)
    net = EarlyExitNet(model, config.points, example_inputs, config.criterion, config.head_width)
    for point, head in zip(net.points, net.heads):
        report.change(point, "exit", f"exit head ({sum(p.numel() for p in head.parameters()):,} params)",
                      after={"params": sum(p.numel() for p in head.parameters())})
    return net


def add_exits(model: nn.Module, config: EarlyExits, *, data=None, example_inputs=None):
    """Wrap ``model`` with early-exit heads; ``report.model`` is the new :class:`EarlyExitNet` (the backbone is
    ``model`` itself, shared, not copied). Train the heads with :class:`ExitTraining` in a fine-tune."""
    return EXITS(model, config, data=data, example_inputs=example_inputs)


@dataclass(frozen=True)
class ExitTraining(CallbackConfig):
    """Fine-tune an :class:`EarlyExitNet`: the exits' cross-entropy (``weights`` per exit, default 1 each) is added
    to the loss; ``freeze_backbone`` trains the heads only, so the final exit stays exactly the original model."""

    weights: tuple[NonNegativeFloat, ...] | None = None
    freeze_backbone: bool = False

    def build(self, model, **_):
        if not isinstance(model, EarlyExitNet):
            raise ConfigError("ExitTraining fine-tunes a model with exits: put an 'exits' stage before it")
        if self.freeze_backbone:
            freeze_backbone_(model)
        return ExitLoss(model, self.weights)


def freeze_backbone_(model: EarlyExitNet) -> None:
    """Train the heads only: the final exit stays exactly the original model."""
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    model.backbone_frozen = True
    model.train(model.training)


class _UpTo(nn.Module):
    """The work a sample does when it leaves at exit ``k`` (``k == len(points)``: the whole network)."""

    def __init__(self, net: EarlyExitNet, k: int):
        super().__init__()
        self.net, self.k = net, k

    def forward(self, x):
        if self.k == len(self.net.points):
            # every head runs before the sample reaches the end
            return self.net.all_exits(x)[-1]
        outs = []

        def stop(k):
            def hook(_m, _i, out):
                outs.append(self.net.heads[k](out))
                if k == self.k:
                    raise _Exit
            return hook

        modules = dict(self.net.backbone.named_modules())
        handles = [modules[p].register_forward_hook(stop(k)) for k, p in enumerate(self.net.points[:self.k + 1])]
        try:
            self.net.backbone(x)
        except _Exit:
            pass
        finally:
            for h in handles:
                h.remove()
        return outs[-1]


def exit_macs(model: EarlyExitNet, example: torch.Tensor) -> list[int]:
    """MACs per sample of leaving at each exit (heads included), the last entry being the full path."""
    from ..measure import analyze

    return [int(analyze(_UpTo(model, k), example[:1]).totals["macs"]) for k in range(len(model.points) + 1)]


def exit_policy_table(exit_logits: Sequence[torch.Tensor], targets: torch.Tensor, criterion,
                      macs: Sequence[int]) -> dict:
    """Accuracy, share leaving at each exit and mean MACs per sample of ``criterion`` applied to
    precomputed per-exit logits (a threshold sweep without re-running the network)."""
    n = len(targets)
    decided = torch.zeros(n, dtype=torch.bool)
    pred = torch.empty(n, dtype=torch.long)
    shares, mean_macs = [], 0.0
    for k, logits in enumerate(exit_logits):
        last = k == len(exit_logits) - 1
        leave = ~decided & (torch.ones(n, dtype=torch.bool) if last else criterion.confident(logits))
        pred[leave] = logits[leave].argmax(1)
        shares.append(float(leave.float().mean()))
        mean_macs += shares[-1] * macs[k]
        decided |= leave
    return {"accuracy": float((pred == targets).float().mean()), "exit_shares": shares, "mean_macs": mean_macs}
