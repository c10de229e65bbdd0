"""Configs and typed vocabularies of structured pruning (frozen dataclasses, validated on creation)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ...core.errors import ConfigError


def _fraction(owner: str, name: str, value, low_open: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (0 < value <= 1 if low_open else 0 <= value < 1)
    if not ok:
        rng = "(0, 1]" if low_open else "[0, 1)"
        raise ConfigError(f"{owner}.{name} must be a number in {rng}, got {value!r}")


# ----- scopes: how channels are ranked
@dataclass(frozen=True)
class Local:
    """Every group loses the same fraction of its channels (ranked within the group)."""


@dataclass(frozen=True)
class Global:
    """Channels compete across groups. ``normalize``: divide scores by their group mean first (scores of
    different layers are not comparable for weight norms or Taylor); None = the importance decides."""

    normalize: bool | None = None


@dataclass(frozen=True)
class LatencyAware:
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

    batch_size: int = 32
    threads: int = 1
    repeats: int = 7
    runtime: str = "eager"
    importance_scale: str = "share"
    refine: bool = False

    def __post_init__(self):
        for name in ("batch_size", "threads", "repeats"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"LatencyAware.{name} must be a positive integer, got {v!r}")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"LatencyAware.runtime must be one of {list(RUNTIMES)}, got {self.runtime!r}")
        if not isinstance(self.refine, bool):
            raise ConfigError(f"LatencyAware.refine must be true or false, got {self.refine!r}")
        if self.importance_scale not in ("share", "mean"):
            raise ConfigError(f"LatencyAware.importance_scale must be 'share' or 'mean', got {self.importance_scale!r}")


RUNTIMES = ("eager", "onnxruntime", "both")


# ----- budgets: what the pruned model must fit
@dataclass(frozen=True)
class Params:
    """Keep at most ``fraction`` of the parameters of prunable layers."""

    fraction: float

    def __post_init__(self):
        _fraction("Params", "fraction", self.fraction)


@dataclass(frozen=True)
class MACs:
    """Keep at most ``fraction`` of the multiply-accumulates (0.5 = 2x fewer MACs)."""

    fraction: float

    def __post_init__(self):
        _fraction("MACs", "fraction", self.fraction)


@dataclass(frozen=True)
class Latency:
    """Reach ``speedup`` x lower latency measured on this machine at ``batch_size`` with ``threads`` threads.

    A per-layer latency table is measured first; a greedy search (NetAdapt-style, without the per-step
    fine-tune) removes the channels that cost least importance per predicted millisecond; the result is
    measured and the search corrected up to ``rounds`` times."""

    speedup: float
    batch_size: int = 32
    threads: int = 1
    rounds: int = 3
    repeats: int = 20

    def __post_init__(self):
        if not isinstance(self.speedup, (int, float)) or self.speedup <= 1:
            raise ConfigError(f"Latency.speedup must be a number > 1 (2.0 = twice as fast), got {self.speedup!r}")
        for name in ("batch_size", "threads", "rounds", "repeats"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"Latency.{name} must be a positive integer, got {v!r}")


BUDGETS = (Params, MACs, Latency)
SCOPES = (Local, Global, LatencyAware)


@dataclass(frozen=True)
class ChannelPruning:
    """Remove whole channels (filters, neurons) and shrink the model physically.

    Give exactly one of ``ratio`` (fraction of each group's channels, or of all channels with Global
    scope) or ``budget`` (Params / MACs / Latency). ``keep`` names layers whose output channels stay;
    ``round_to`` keeps channel counts at multiples of it (8 suits SIMD kernels); ``min_channels`` and
    ``max_ratio`` (no group loses more than this fraction of its channels; None = no cap) bound every group.

    >>> from netcompress.prune.structured import L1
    >>> ChannelPruning(budget=MACs(0.5), importance=L1(), round_to=8).round_to
    8
    >>> ChannelPruning(ratio=1.0)
    Traceback (most recent call last):
    ...
    netcompress.core.errors.ConfigError: ChannelPruning.ratio must be a number in [0, 1), got 1.0
    """

    ratio: float | None = None
    budget: Params | MACs | Latency | None = None
    importance: object = None  # an Importance; None -> L1()
    scope: Local | Global = field(default_factory=Local)
    keep: tuple[str, ...] = ()
    round_to: int = 1
    min_channels: int = 1
    max_ratio: float | None = None

    def __post_init__(self):
        if (self.ratio is None) == (self.budget is None):
            raise ConfigError("ChannelPruning needs exactly one of ratio= (e.g. 0.3) or budget= "
                              "(Params(0.5), MACs(0.5), Latency(speedup=2.0))")
        if self.ratio is not None:
            _fraction("ChannelPruning", "ratio", self.ratio, low_open=False)
        if self.budget is not None and not isinstance(self.budget, BUDGETS):
            raise ConfigError(f"ChannelPruning.budget must be one of Params, MACs, Latency, got {self.budget!r}")
        if not isinstance(self.scope, SCOPES):
            raise ConfigError(f"ChannelPruning.scope must be Local(), Global() or LatencyAware(), got {self.scope!r}")
        if isinstance(self.scope, LatencyAware) and not isinstance(self.budget, (MACs, Params)):
            raise ConfigError(f"ChannelPruning.scope=LatencyAware() needs budget=MACs(...) or Params(...) (the greedy "
                              f"stops there; Latency budgets are latency-aware already), got budget={self.budget!r}")
        if isinstance(self.keep, str) or not all(isinstance(k, str) for k in self.keep):
            raise ConfigError(f"ChannelPruning.keep must be a tuple of layer names, got {self.keep!r}")
        object.__setattr__(self, "keep", tuple(self.keep))
        for name in ("round_to", "min_channels"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"ChannelPruning.{name} must be a positive integer, got {v!r}")
        if self.max_ratio is not None:
            _fraction("ChannelPruning", "max_ratio", self.max_ratio)
        if self.importance is not None and not callable(self.importance):
            raise ConfigError(f"ChannelPruning.importance must be an Importance such as L1(), Taylor(), "
                              f"BNScale(), Random(); got {self.importance!r}")


@dataclass(frozen=True)
class BlockPruning:
    """Depth pruning (epsilon-ResNet style): replace residual blocks whose branch contributes least.

    Give exactly one of ``blocks`` (how many to remove), ``epsilon`` (remove every block whose branch output
    is smaller than ``epsilon`` x its input, RMS ratio over ``data``) or ``budget`` (MACs / Params: remove
    blocks until the model fits). ``scope=LatencyAware()`` ranks blocks by contribution per measured
    millisecond saved instead of contribution alone. Candidates are found through the graph: a module whose
    output is ``[relu](x + branch(x))`` with unchanged shape.

    >>> BlockPruning(budget=MACs(0.5), scope=LatencyAware(batch_size=32)).budget
    MACs(fraction=0.5)
    >>> BlockPruning(blocks=2, epsilon=0.1)
    Traceback (most recent call last):
    ...
    netcompress.core.errors.ConfigError: BlockPruning needs exactly one of blocks= (how many), epsilon= (threshold) or budget= (MACs(0.5))
    """

    blocks: int | None = None
    epsilon: float | None = None
    budget: MACs | Params | None = None
    scope: Global | LatencyAware = field(default_factory=Global)
    batches: int = 4
    batch_size: int = 64
    keep: tuple[str, ...] = ()

    def __post_init__(self):
        if sum(v is not None for v in (self.blocks, self.epsilon, self.budget)) != 1:
            raise ConfigError("BlockPruning needs exactly one of blocks= (how many), epsilon= (threshold) or "
                              "budget= (MACs(0.5))")
        if self.blocks is not None and (not isinstance(self.blocks, int) or self.blocks < 1):
            raise ConfigError(f"BlockPruning.blocks must be a positive integer, got {self.blocks!r}")
        if self.epsilon is not None and (not isinstance(self.epsilon, (int, float)) or self.epsilon <= 0):
            raise ConfigError(f"BlockPruning.epsilon must be a positive number, got {self.epsilon!r}")
        if self.budget is not None and not isinstance(self.budget, (MACs, Params)):
            raise ConfigError(f"BlockPruning.budget must be MACs(...) or Params(...), got {self.budget!r}")
        if not isinstance(self.scope, (Global, LatencyAware)):
            raise ConfigError(f"BlockPruning.scope must be Global() (rank by contribution) or LatencyAware() "
                              f"(contribution per measured ms), got {self.scope!r}")
        object.__setattr__(self, "keep", tuple(self.keep))
