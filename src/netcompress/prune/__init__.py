"""Pruning: unstructured masks and criteria, schedules, structured removal through the graph."""
from .api import PRUNE_TRANSFORMS, prune_
from .config import NM, Elementwise, Global, Layerwise, Neurons, Unstructured
from .criteria import SNIP, APoZ, Criterion, GraSP, Magnitude, Random
from .masks import Mask, Target, bake_, get_mask, is_masked, masked_targets, remove_mask, select, set_mask, sparsity
from .second_order import OBD, OBS
from .unstructured import masks_from_scores, prune_unstructured

__all__ = ["APoZ", "Criterion", "Elementwise", "Global", "GraSP", "Layerwise", "Magnitude", "Mask", "NM",
           "Neurons", "OBD", "OBS", "PRUNE_TRANSFORMS", "Random", "SNIP", "Target", "Unstructured", "bake_",
           "get_mask", "is_masked", "masked_targets", "masks_from_scores", "prune_", "prune_unstructured",
           "remove_mask", "select", "set_mask", "sparsity"]
