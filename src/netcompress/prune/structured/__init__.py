"""Structured pruning that shrinks the model: channels/filters/neurons and whole residual blocks are
removed physically through the channel graph (netcompress.graph)."""
from .channels import PruneResult, prune_channels
from .config import MACs, BlockPruning, ChannelPruning, Global, Latency, Local, Params
from .importance import BNScale, Importance, L1, L2, Random, Taylor

__all__ = ["BNScale", "BlockPruning", "ChannelPruning", "Global", "Importance", "L1", "L2", "Latency", "Local",
           "MACs", "Params", "PruneResult", "Random", "Taylor", "prune_channels"]
