"""Configs and typed vocabularies of structured pruning (frozen dataclasses, validated on creation)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from ...core.config import Config, Fraction, Interval, PositiveFloat, PositiveInt, Share
from ...core.errors import ConfigError
from ..config import PruneConfig
from .importance import Importance


# ----- scopes: how channels are ranked
class ChannelScope(Config):
    """How channel scores are compared: within each group, across groups, or per measured millisecond."""


@dataclass(frozen=True)
class Local(ChannelScope):
    """Every group loses the same fraction of its channels (ranked within the group)."""


@dataclass(frozen=True)
class Global(ChannelScope):
    """Channels compete across groups. ``normalize``: divide scores by their group mean first (scores of
    different layers are not comparable for weight norms or Taylor); None = the importance decides."""

    normalize: bool | None = None


@dataclass(frozen=True)
class LatencyAware(ChannelScope):
    """Channels (or residual blocks) compete across the model by importance lost per millisecond saved,
    the milliseconds measured on this device at ``batch_size`` with ``threads`` threads (a per-layer latency
    table; NetAdapt-style greedy). With a MACs or Params budget the greedy stops at the budget: the same
    MACs are removed, but where they cost time (thin, large-activation layers first), so the measured
    speedup tracks the MAC ratio.

    ``runtime``: where the milliseconds are measured: ``"eager"`` (torch), ``"onnxruntime"`` (each layer and
    model exported to ONNX and run in an onnxruntime CPU session), or ``"both"`` (the mean of the two
    relative latencies: one pruned model for both deployments; they disagree, e.g. eager pays for a
    max-pool over wide early layers, onnxruntime for thin convolutions).

    ``importance_scale``: how channel scores of different groups are put on one scale. ``"share"``: a
    channel's score over its group's total, so a quarter of a thin layer costs as much as a quarter of a
    wide one and cuts spread out. ``"mean"``: over its group's mean, every channel ~1, so the cut follows
    the milliseconds; pair it with ``ChannelPruning(max_ratio=...)`` or thin, slow layers get emptied.
    (VGG-small / Fashion-MNIST, 2x fewer MACs: "share" measured 0.72-0.80x the MAC ratio in speedup, "mean"
    with max_ratio=0.5 0.87-0.90, in eager and onnxruntime.)

    ``refine``: after the greedy meets the budget, trade one channel step of one layer group for one of
    another while the budget holds and the table predicts a faster model (the greedy never revisits a cut).
    Importance then only picks which channels of a layer go, not how many."""

    batch_size: PositiveInt = 32
    threads: PositiveInt = 1
    repeats: PositiveInt = 7
    runtime: Literal["eager", "onnxruntime", "both"] = "eager"
    importance_scale: Literal["share", "mean"] = "share"
    refine: bool = False


RUNTIMES = ("eager", "onnxruntime", "both")


# ----- budgets: what the pruned model must fit
class Budget(Config):
    """What a structured pruning call must reach."""


@dataclass(frozen=True)
class Params(Budget):
    """Keep at most ``fraction`` of the parameters of prunable layers."""

    fraction: Share


@dataclass(frozen=True)
class MACs(Budget):
    """Keep at most ``fraction`` of the multiply-accumulates (0.5 = 2x fewer MACs)."""

    fraction: Share


@dataclass(frozen=True)
class Latency(Budget):
    """Reach ``speedup`` x lower latency measured on this machine at ``batch_size`` with ``threads`` threads.

    A per-layer latency table is measured first; a greedy search (NetAdapt-style, without the per-step
    fine-tune) removes the channels that cost least importance per predicted millisecond; the result is
    measured and the search corrected up to ``rounds`` times."""

    speedup: Annotated[float, Interval(1, None, "()")]
    batch_size: PositiveInt = 32
    threads: PositiveInt = 1
    rounds: PositiveInt = 3
    repeats: PositiveInt = 20


@dataclass(frozen=True)
class ChannelPruning(PruneConfig):
    """Remove whole channels (filters, neurons) and shrink the model physically.

    Give exactly one of ``ratio`` (fraction of each group's channels, or of all channels with Global
    scope) or ``budget`` (Params / MACs / Latency). ``include`` / ``exclude`` choose the layers whose output
    channels may go (globs over names, or ``"type:Conv2d"``); the others keep theirs;
    ``round_to`` keeps channel counts at multiples of it (8 suits SIMD kernels); ``min_channels`` and
    ``max_ratio`` (no group loses more than this fraction of its channels; None = no cap) bound every group.

    >>> from netcompress.prune.structured import L1
    >>> ChannelPruning(budget=MACs(0.5), importance=L1(), round_to=8).round_to
    8
    >>> ChannelPruning(ratio=1.0)
    Traceback (most recent call last):
    ...
    netcompress.core.errors.ConfigError: ChannelPruning.ratio must be a number in [0, 1); got 1.0
    """

    ratio: Fraction | None = None
    budget: Budget | None = None
    importance: Importance | None = None  # None -> L1()
    scope: ChannelScope = field(default_factory=Local)
    round_to: PositiveInt = 1
    min_channels: PositiveInt = 1
    max_ratio: Share | None = None

    def validate(self):
        if (self.ratio is None) == (self.budget is None):
            raise ConfigError("ChannelPruning needs exactly one of ratio= (e.g. 0.3) or budget= "
                              "(Params(0.5), MACs(0.5), Latency(speedup=2.0))")
        if isinstance(self.scope, LatencyAware) and not isinstance(self.budget, (MACs, Params)):
            raise ConfigError(f"ChannelPruning.scope=LatencyAware() needs budget=MACs(...) or Params(...) (the greedy "
                              f"stops there; Latency budgets are latency-aware already), got budget={self.budget!r}")


@dataclass(frozen=True)
class BlockPruning(PruneConfig):
    """Depth pruning (epsilon-ResNet style): replace residual blocks whose branch contributes least.

    Give exactly one of ``blocks`` (how many to remove), ``epsilon`` (remove every block whose branch output
    is smaller than ``epsilon`` x its input, RMS ratio over ``data``) or ``budget`` (MACs / Params: remove
    blocks until the model fits). ``scope=LatencyAware()`` ranks blocks by contribution per measured
    millisecond saved instead of contribution alone. Candidates are found through the graph: a module whose
    output is ``[relu](x + branch(x))`` with unchanged shape; ``exclude`` (globs) names blocks that stay.

    >>> BlockPruning(budget=MACs(0.5), scope=LatencyAware(batch_size=32)).budget
    MACs(fraction=0.5)
    >>> BlockPruning(blocks=2, epsilon=0.1)
    Traceback (most recent call last):
    ...
    netcompress.core.errors.ConfigError: BlockPruning needs exactly one of blocks= (how many), epsilon= (threshold) or budget= (MACs(0.5))
    """

    blocks: PositiveInt | None = None
    epsilon: PositiveFloat | None = None
    budget: MACs | Params | None = None
    scope: Global | LatencyAware = field(default_factory=Global)
    batches: PositiveInt = 4
    batch_size: PositiveInt = 64

    def validate(self):
        if sum(v is not None for v in (self.blocks, self.epsilon, self.budget)) != 1:
            raise ConfigError("BlockPruning needs exactly one of blocks= (how many), epsilon= (threshold) or "
                              "budget= (MACs(0.5))")
