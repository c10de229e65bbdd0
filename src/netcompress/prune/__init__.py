"""Pruning: unstructured masks and criteria, schedules, structured removal through the graph."""
from .api import PRUNE, prune_
from .config import NM, Elementwise, Global, Granularity, Layerwise, Neurons, PruneConfig, Scope, Unstructured
from .criteria import SNIP, APoZ, Criterion, GraSP, Magnitude, Random
from .masks import Mask, Target, bake_, get_mask, is_masked, masked_targets, remove_mask, select, set_mask, sparsity
from .second_order import OBD, OBS
from .lottery import LotteryTicket, find_ticket, random_reinit, rewind_
from .schedules import AGP, GradualPrune, GradualPruning, Iterative, OneShot, Schedule, iterative_prune
from .sensitivity import apply_levels_, levels_for_target, sensitivity_analysis
from .sparse import CSR, RelativeIndex, SparseLinear, load_sparse, load_sparse_into, save_sparse, sparsify_linears_
from .unstructured import masks_from_scores, prune_unstructured
from .structured import BlockPruning, ChannelPruning, Latency, MACs, Params, prune_channels  # noqa: F401 (issue 4)

__all__ = ["AGP", "APoZ", "CSR", "Criterion", "Elementwise", "Global", "GradualPrune", "GradualPruning", "GraSP", "Iterative",
           "Layerwise", "LotteryTicket", "Magnitude", "Mask", "NM", "Neurons", "OBD", "OBS", "OneShot",
           "PRUNE", "PruneConfig", "Scope", "Granularity", "Random", "RelativeIndex", "SNIP", "Schedule", "SparseLinear", "Target",
           "Unstructured", "apply_levels_", "bake_", "find_ticket", "get_mask", "is_masked", "iterative_prune",
           "levels_for_target", "load_sparse", "load_sparse_into", "masked_targets", "masks_from_scores",
           "prune_", "prune_unstructured", "random_reinit", "remove_mask", "rewind_", "save_sparse", "select",
           "sensitivity_analysis", "set_mask", "sparsify_linears_", "sparsity"]
