"""Importance learned during training: network slimming (L1 on BN scales) and learnable binary gates.

Both are Trainer callbacks; neither asks for per-layer ratios. After training, prune to a budget with the
learned scores ranked globally::

    gates = ChannelGates(model, x, target=MACs(0.5))
    Trainer(model, data, cfg, callbacks=[gates]).fit()
    nc.prune_(model, ChannelPruning(budget=MACs(0.5), importance=gates.importance(), scope=Global()),
              example_inputs=x)
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from ...core.errors import ConfigError
from ...graph import ChannelGraph
from ...train import Callback
from .config import MACs
from .importance import Precomputed

log = logging.getLogger(__name__)
_BN = nn.modules.batchnorm._BatchNorm


class SlimmingPenalty(Callback):
    """Network slimming (Liu et al. 2017): adds ``strength * sum |gamma|`` over the BatchNorms to the loss,
    driving unneeded channels' scales to zero; then prune with ``BNScale()`` and ``Global()`` scope."""

    def __init__(self, strength: float = 1e-4, model: nn.Module | None = None):
        if not isinstance(strength, (int, float)) or strength <= 0:
            raise ConfigError(f"SlimmingPenalty.strength must be a positive number, got {strength!r}")
        self.strength = float(strength)
        self._bns = None if model is None else [m for m in model.modules() if isinstance(m, _BN) and m.affine]

    def on_fit_start(self, trainer):
        if self._bns is None:
            self._bns = [m for m in trainer.model.modules() if isinstance(m, _BN) and m.affine]
        if not self._bns:
            raise ConfigError("SlimmingPenalty needs a model with affine BatchNorm layers")

    def extra_loss(self, trainer, inputs, outputs, targets):
        return self.strength * sum(bn.weight.abs().sum() for bn in self._bns)


class ChannelGates(Callback):
    """Learnable binary masks trained jointly with the weights (seed 002).

    One gate logit per prunable channel unit of the channel graph. Forward uses the hard gate
    ``logit > 0`` (a real binary mask); backward uses the gradient of ``sigmoid(logit / temperature)``
    (straight-through estimator). The only knob is the resource target: a penalty
    ``strength * max(0, expected_MACs / dense_MACs - target.fraction)`` from the soft gates pushes the
    network towards the budget and stops pushing once it is met; which layers shrink is learned. After
    every step the hard MACs are held at or above the target (``hold_budget``), so the gates cannot
    overshoot it.
    """

    def __init__(self, model: nn.Module, example_inputs, target: MACs = MACs(0.5), strength: float = 5.0,
                 temperature: float = 1.0, init: float = 1.0, lr: float = 0.1):
        if not isinstance(target, MACs):
            raise ConfigError(f"ChannelGates.target must be MACs(fraction), got {target!r}")
        for name, v in (("strength", strength), ("temperature", temperature), ("lr", lr)):
            if not isinstance(v, (int, float)) or v <= 0:
                raise ConfigError(f"ChannelGates.{name} must be a positive number, got {v!r}")
        self.target, self.strength, self.temperature, self.lr = target, float(strength), float(temperature), lr
        self.graph = ChannelGraph(model, example_inputs)
        if not self.graph.groups:
            raise ConfigError(f"{type(model).__name__} has no prunable channels to gate")
        n_units = len(self.graph.group_of_unit)
        self.logits = nn.Parameter(torch.full((n_units,), float(init)))
        self._model = model
        self._hooks: list = []
        # per channel id: its unit, or n_units (a constant 1) when locked
        self._unit = torch.as_tensor(np.where(self.graph.unit_of >= 0, self.graph.unit_of, n_units))
        self._points = self._gate_points()
        self._layers = [(torch.as_tensor(layer.in_labels) if not layer.depthwise else None,
                         torch.as_tensor(layer.out_labels), layer.kernel * layer.spatial) for layer in self.graph.layers]
        self._dense = float(self.graph.cost(None)["macs"])

    def _gate_points(self) -> dict[str, tuple[torch.Tensor, int]]:
        """Where each channel is zeroed, and on which output dim: after its norm if one follows the producer,
        else after the producer."""
        return {u.module: (torch.as_tensor(u.labels), self.graph.out_dim[u.module]) for u in self.graph.usages
                if u.role != "in" and u.module not in self.graph.normed}

    def gates(self, hard: bool = True) -> torch.Tensor:
        soft = torch.sigmoid(self.logits / self.temperature)
        g = ((self.logits > 0).float() + soft - soft.detach()) if hard else soft
        return torch.cat([g, g.new_ones(1)])

    def attach(self) -> "ChannelGates":
        self.detach()
        for name, (labels, cdim) in self._points.items():
            idx = self._unit[labels]

            def hook(mod, args, out, idx=idx, cdim=cdim):
                g = self.gates()[idx]  # (C,)
                shape = [1] * out.dim()
                shape[cdim] = -1
                return out * g.view(shape)

            self._hooks.append(self._model.get_submodule(name).register_forward_hook(hook))
        return self

    def detach(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def expected_macs(self, hard: bool = False) -> torch.Tensor:
        g = self.gates(hard=hard)
        total = g.new_zeros(())
        for in_labels, out_labels, per in self._layers:
            n_out = g[self._unit[out_labels]].sum()
            n_in = g[self._unit[in_labels]].sum() if in_labels is not None else 1.0
            total = total + n_out * n_in * per
        return total / self._dense

    # ----- Trainer hooks
    def on_fit_start(self, trainer):
        self.attach()
        # the gates get their own Adam: the penalty's gradient per logit is ~1/width, far below the
        # weights' scale, and a per-parameter step size lets every gate move at the same pace
        if getattr(self, "_opt", None) is None:
            self._opt = torch.optim.Adam([self.logits], lr=self.lr)

    def on_step_end(self, trainer, step, loss):
        self._opt.step()
        self._opt.zero_grad(set_to_none=True)
        self.hold_budget()

    def hold_budget(self) -> None:
        """Shift all logits up by the least common amount that brings the hard MACs back to the target when
        they fall under it. The penalty only pushes down and Adam moves every logit at the same pace, so
        without this the gates overshoot the target by far; a common shift keeps the order the training learned."""
        with torch.no_grad():
            if float(self.expected_macs(hard=True)) >= self.target.fraction:
                return
            start = self.logits.detach().clone()
            lo, hi = 0.0, float(-start.min()) + 1e-4  # hi opens every gate
            for _ in range(40):
                mid = (lo + hi) / 2
                self.logits.copy_(start + mid)
                if float(self.expected_macs(hard=True)) >= self.target.fraction:
                    hi = mid
                else:
                    lo = mid
            self.logits.copy_(start + hi)

    def extra_loss(self, trainer, inputs, outputs, targets):
        over = self.expected_macs(hard=False) - self.target.fraction
        return self.strength * torch.clamp(over, min=0.0)

    def on_epoch_end(self, trainer, *args, **kwargs):
        with torch.no_grad():
            log.info("gates: %d/%d channel units on, hard MACs %.3f of dense", int((self.logits > 0).sum()),
                     len(self.logits), float(self.expected_macs(hard=True)))

    def on_fit_end(self, trainer, *args, **kwargs):
        self.detach()

    def state_dict(self):
        opt = getattr(self, "_opt", None)
        return {"logits": self.logits.detach().clone(), "optimizer": opt.state_dict() if opt else None}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.logits.copy_(state["logits"])
        if state.get("optimizer") is not None:
            self._opt = torch.optim.Adam([self.logits], lr=self.lr)
            self._opt.load_state_dict(state["optimizer"])

    def importance(self) -> Precomputed:
        """Gate logits as channel scores (comparable across layers) for ChannelPruning; hooks removed."""
        self.detach()
        logits = self.logits.detach().double().numpy()
        scores = {grp.index: np.array([logits[self.graph.unit_of[u[0]]] for u in grp.units])
                  for grp in self.graph.groups}
        return Precomputed(scores, comparable=True)
