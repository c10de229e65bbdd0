"""Recipe stage ``decompose``: one ``decompose_(model, config, data)`` call (SVD, Tucker2, and the
architecture family's DepthwiseSeparable), e.g.

    - {type: decompose, config: {type: SVD, keep: 0.5, data_aware: true}}
    - {type: fine-tune, epochs: 2, loss: {type: kd}}
"""
from __future__ import annotations

from ..recipe.builtin import _calibration_data
from ..recipe.registry import config_stage_params, register_stage
from .factor import DECOMPOSE_TRANSFORMS, decompose_


def decompose_types() -> dict[str, type]:
    import netcompress.arch  # noqa: F401 (registers DepthwiseSeparable)

    return {t.__name__: t for t in DECOMPOSE_TRANSFORMS.config_types()}


DecomposeParams = config_stage_params(
    "DecomposeParams", "low-rank config", decompose_types, dict,
    "The low-rank config and how many training samples data-aware factorization may look at.")


def _apply_decompose(ctx, params: DecomposeParams) -> None:
    records = decompose_(ctx.model, params.config, data=_calibration_data(ctx, params.calibration))
    if ctx.is_main:
        ctx.record("factored", {r.name: {"kind": r.kind, "ranks": list(r.ranks), "params_before": r.params_before,
                                         "params_after": r.params_after} for r in records})


@register_stage("decompose", DecomposeParams, restore=_apply_decompose)
def run_decompose(ctx, params: DecomposeParams) -> None:
    """Factor layers into products of thinner ones (truncated SVD, Tucker-2, depthwise-separable)."""
    _apply_decompose(ctx, params)
