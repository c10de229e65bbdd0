"""Architecture redesign: depthwise-separable replacements of trained convolutions (initialised by
per-channel SVD of the kernel, exact at full multiplier), used through ``decompose_``."""
from .separable import DepthwiseSeparable, separable_factors

__all__ = ["DepthwiseSeparable", "separable_factors"]
