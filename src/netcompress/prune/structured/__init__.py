"""Structured pruning that shrinks the model: channels/filters/neurons and whole residual blocks are
removed physically through the channel graph (netcompress.graph)."""
from .channels import PruneResult, prune_channels
from .config import BlockPruning, Budget, ChannelPruning, ChannelScope, Global, Latency, LatencyAware, Local, MACs, Params
from .latency import LatencyTable
from .learned import ChannelGates, SlimmingPenalty
from .depth import block_contributions, find_blocks, prune_blocks, zero_branches_
from .importance import BNScale, Importance, L1, L2, Random, Taylor

__all__ = ["BNScale", "BlockPruning", "Budget", "ChannelScope", "ChannelGates", "ChannelPruning", "SlimmingPenalty", "Global", "Importance", "L1", "L2", "Latency", "LatencyAware", "LatencyTable", "Local",
           "MACs", "Params", "PruneResult", "Random", "Taylor", "block_contributions", "find_blocks", "prune_blocks",
           "prune_channels", "zero_branches_"]
