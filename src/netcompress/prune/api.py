"""The in-place pruning verb: ``prune_(model, config, *, data=None, example_inputs=None) -> Report``.

Each pruning family registers a transform for its config type (a subclass of :class:`PruneConfig`)::

    @PRUNE.register(MyConfig)
    def _apply(model, config, report, *, data=None, example_inputs=None, loss_fn=None) -> None: ...
"""
from __future__ import annotations

from torch import nn

from ..core.report import Report
from ..core.verbs import Verb
from .config import PruneConfig

PRUNE = Verb("prune_", "prune", PruneConfig, "Prune in place: unstructured masks, channels, blocks.")


def prune_(model: nn.Module, config: PruneConfig, *, data=None, example_inputs=None, loss_fn=None) -> Report:
    """Prune ``model`` in place as ``config`` says. ``data`` feeds data-hungry criteria (only its inputs reach
    the model; labels feed the loss), ``example_inputs`` traces the graph for structured removal, ``loss_fn``
    replaces cross-entropy in gradient criteria. Returns what changed per layer and what was skipped."""
    return PRUNE(model, config, data=data, example_inputs=example_inputs, loss_fn=loss_fn)
