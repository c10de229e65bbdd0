"""Recipe stages by name. Every verb (``prune_``, ``quantize_``, ``decompose_``, ``add_exits``) is a stage of its
own, derived from ``netcompress.core.verbs.VERBS``: a family that registers a config with its verb is usable from
YAML with no edit here. The stages that are not verbs (fine-tune, export, sensitivity) register with
:func:`register_stage`; their parameters are a :class:`~netcompress.core.config.Config` class, so a stage is
validated by the same rules as every config.

``restore(ctx, params)`` rebuilds the *structure* a finished stage leaves behind (removed channels, quantizers)
so that ``--resume`` can load the stage's saved weights into it; stages that only change values need none.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..core.config import Config
from ..core.registry import Registry


@dataclass(frozen=True)
class StageType:
    name: str
    params: type[Config]
    run: Callable[[Any, Any], None]
    restore: Optional[Callable[[Any, Any], None]] = None
    doc: str = ""


STAGES: Registry[StageType] = Registry("stage type")


def register_stage(name: str, params: type[Config], restore: Optional[Callable] = None):
    """Decorator: register ``fn(ctx, params)`` as the runner of stage ``name``."""
    if not (isinstance(params, type) and issubclass(params, Config)):
        raise TypeError(f"stage {name!r}: params must be a Config class")

    def deco(fn):
        STAGES.register(name)(StageType(name, params, fn, restore, (fn.__doc__ or "").strip()))
        return fn

    return deco


def stage_type(name: str) -> StageType:
    from . import stages  # noqa: F401 (registers the stages: the built-in ones and one per verb)

    return STAGES.get(name)


def stage_names() -> list[str]:
    from . import stages  # noqa: F401

    return STAGES.names()
